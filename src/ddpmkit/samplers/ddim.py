"""DDIM: the non-Markovian sampler of Song, Meng & Ermon 2021, and its inversion."""

from __future__ import annotations

import torch

from .._tensor import extract, randn_like
from ..denoiser import DenoiserLike
from .common import Callback, alpha_bar_at


@torch.no_grad()
def sample(
    denoiser: DenoiserLike,
    x_T: torch.Tensor,
    timesteps: torch.Tensor,
    *,
    label: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
    eta: float = 0.0,
) -> torch.Tensor:
    """x_s = √ᾱ_s·x̂_0 + √(1 − ᾱ_s − σ²)·ε̂ + σ·z down the descending `timesteps` (Eq. 12 of
    Song et al. 2021), with σ = η·√((1 − ᾱ_s)/(1 − ᾱ_t))·√(1 − ᾱ_t/ᾱ_s) (their Eq. 16).

    Notation: t the current step, s the next (earlier) one, ᾱ_s = 1 after the last step,
    eta -> η: 0 is the deterministic sampler (an Euler step of the probability-flow ODE),
    1 draws the same σ² = β̃ as ancestral DDPM on the same grid.
    """
    if eta < 0:
        raise ValueError(f"eta must be >= 0, got {eta}")
    x = x_T
    for i, t in enumerate(timesteps.tolist()):
        s = int(timesteps[i + 1]) if i + 1 < len(timesteps) else None
        x_next, x0 = step(denoiser, x, t, s, label=label, generator=generator, eta=eta)
        if callback is not None:
            callback(i=i, t=t, x=x, x0=x0, x_next=x_next)
        x = x_next
    return x


def update(x0: torch.Tensor, eps: torch.Tensor, abar_s: torch.Tensor, sigma: torch.Tensor | float = 0.0) -> torch.Tensor:
    """The mean of one DDIM step to ᾱ_s, √ᾱ_s·x̂_0 + √(1 − ᾱ_s − σ²)·ε̂ (Eq. 12 of Song et al.
    2021); σ = 0 is the deterministic step. `abar_s` broadcasts against x0 (one value per
    example allowed, as progressive distillation needs)."""
    return abar_s.sqrt() * x0 + (1 - abar_s - sigma**2).clamp(min=0).sqrt() * eps


@torch.no_grad()
def step(
    denoiser: DenoiserLike,
    x: torch.Tensor,
    t: int,
    s: int | None,
    *,
    label: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    eta: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One DDIM step from timestep t to the earlier s (None: into the data, ᾱ_s = 1, no noise):
    (x_s, the denoiser's x̂_0 at t). `sample` is this step down a grid; RePaint
    (editing/repaint.py) takes it between its joins of the known pixels."""
    t_batch = torch.full((x.shape[0],), t, device=x.device, dtype=torch.long)
    out = denoiser(x, t_batch, label)
    abar_t, abar_s = alpha_bar_at(denoiser.schedule, t, s, x)
    sigma = eta * ((1 - abar_s) / (1 - abar_t) * (1 - abar_t / abar_s)).clamp(min=0).sqrt()
    x_next = update(out.x0, out.eps, abar_s, sigma)
    if eta > 0 and s is not None:
        x_next = x_next + sigma * randn_like(x, generator)
    return x_next, out.x0


@torch.no_grad()
def invert(
    denoiser: DenoiserLike,
    x0: torch.Tensor,
    timesteps: torch.Tensor,
    *,
    label: torch.Tensor | None = None,
    callback: Callback | None = None,
) -> torch.Tensor:
    """Run deterministic DDIM (η = 0) backwards: data x0 -> the latent x_T that `sample` with
    the same descending `timesteps` maps back to (nearly) x0.

    Each step t -> t' (t' the next *larger* step) reuses the deterministic update with ε̂
    evaluated at the current point, x_{t'} = √ᾱ_{t'}·x̂_0 + √(1 − ᾱ_{t'})·ε̂(x_t, t); the
    first step from the data evaluates ε̂ at the grid's last (smallest) step. The error of
    that approximation shrinks with the step size (Sec. 4.3 of Song et al. 2021).
    """
    schedule = denoiser.schedule
    ascending = timesteps.flip(0).tolist()
    x = x0
    for i, t_next in enumerate(ascending):
        t_eval = ascending[max(i - 1, 0)]
        t_batch = torch.full((x.shape[0],), t_eval, device=x.device, dtype=torch.long)
        out = denoiser(x, t_batch, label) if i > 0 else _at_data(denoiser, x, t_batch, label)
        abar_next = extract(schedule.alphas_cumprod, torch.full_like(t_batch, t_next), x)
        x_next = abar_next.sqrt() * out.x0 + (1 - abar_next).sqrt() * out.eps
        if callback is not None:
            callback(i=i, t=t_next, x=x, x0=out.x0, x_next=x_next)
        x = x_next
    return x


def _at_data(denoiser: DenoiserLike, x0: torch.Tensor, t: torch.Tensor, label: torch.Tensor | None):
    """ε̂ at the data point treated as x_t (x̂_0 = x0 there: the data is its own estimate)."""
    out = denoiser(x0, t, label)
    return type(out)(x0=x0, eps=out.eps, var_frac=out.var_frac)
