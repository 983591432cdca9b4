"""Ancestral sampling: Algorithm 2 of Ho et al. 2020."""

from __future__ import annotations

import torch

from .._tensor import randn_like
from ..denoiser import DenoiserLike
from ..process import reverse_log_variance
from ..schedules import posterior_coefficients
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
) -> torch.Tensor:
    """Draw x_{s} ~ p(x_s | x_t) = N(μ̃(x_t, x̂_0), σ²) down the descending `timesteps`.

    Notation: t the current step, s the next (earlier) one, ᾱ_s = 1 after the last;
    β = 1 − ᾱ_t/ᾱ_s and β̃ = β·(1 − ᾱ_s)/(1 − ᾱ_t) of the jump s -> t, so a grid that skips
    steps samples the respaced process exactly; σ² = β̃ (fixed_small), β (fixed_large) or
    the learned interpolation of the two. No noise on the last step, so fixed_large's β̃ at
    t = 0 (used in the bound, process.p_mean_variance) never matters here: t = 0 is always last.
    """
    x = x_T
    for i, t in enumerate(timesteps.tolist()):
        s = int(timesteps[i + 1]) if i + 1 < len(timesteps) else None
        x_next, x0 = step(denoiser, x, t, s, label=label, generator=generator)
        if callback is not None:
            callback(i=i, t=t, x=x, x0=x0, x_next=x_next)
        x = x_next
    return x


@torch.no_grad()
def step(
    denoiser: DenoiserLike,
    x: torch.Tensor,
    t: int,
    s: int | None,
    *,
    label: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One ancestral step from timestep t to the earlier timestep s (None: into the data,
    ᾱ_s = 1, the mean alone): (x_s, the denoiser's x̂_0 at t). `sample` is this step down a grid;
    RePaint (editing/repaint.py) takes it between its joins of the known pixels."""
    t_batch = torch.full((x.shape[0],), t, device=x.device, dtype=torch.long)
    out = denoiser(x, t_batch, label)
    abar_t, abar_s = alpha_bar_at(denoiser.schedule, t, s, x)
    coef_x0, coef_xt, beta_tilde = posterior_coefficients(abar_t, abar_s)
    mean = coef_x0 * out.x0 + coef_xt * x
    if s is None:
        return mean, out.x0
    log_var = reverse_log_variance(denoiser.variance, 1 - abar_t / abar_s, beta_tilde, out.var_frac)
    return mean + (0.5 * log_var).exp() * randn_like(x, generator), out.x0
