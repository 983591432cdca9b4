"""Heun's method on the probability-flow ODE: Algorithm 1 of Karras et al. 2022 (EDM), on a VP grid."""

from __future__ import annotations

import torch

from ..denoiser import DenoiserLike
from .common import Callback, alpha_bar_pair


def network_evaluations(steps: int) -> int:
    """Euler's first and last steps take one evaluation, every other step two: 2n − 2 (1 for n = 1)."""
    return max(2 * steps - 2, 1)


def evaluated_at(timesteps: list[int]) -> list[int]:
    """The timestep of each network evaluation on `timesteps`: every grid step t_i, and the
    trapezoid's second evaluation at t_{i+1} for every step but the first and the last."""
    out = []
    for i, t in enumerate(timesteps):
        out.append(t)
        if 0 < i < len(timesteps) - 1:
            out.append(timesteps[i + 1])
    return out


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
    """Integrate dx̃/dσ̃ = ε̂ in the scaled variables x̃ = x/√ᾱ, σ̃ = √((1 − ᾱ)/ᾱ) (the VP ODE
    written as EDM's σ-ODE, Eq. 4 of Karras et al. with s(t) = √ᾱ): an Euler step to the next
    grid point, then the trapezoidal correction with ε̂ there. Two steps are Euler alone: the
    last, into the data (σ̃ = 0, as in EDM), and the first: from pure noise the path is a
    straight line in x̃ (ε̂ ≈ (x̃ − μ)/σ̃), which Euler follows, while the trapezoid over a
    jump as large as the cosine schedule's σ̃ = 2·10⁴ -> 12 weights the small curvature at the
    near end by half the interval (error 0.27 instead of 0.0025 on Gaussian data at 20
    steps). So n ≥ 2 steps cost 2n − 2 network evaluations. Deterministic.
    """
    x = x_T
    for i, t in enumerate(timesteps.tolist()):
        t_batch = torch.full((x.shape[0],), t, device=x.device, dtype=torch.long)
        out = denoiser(x, t_batch, label)
        abar_t, abar_s = alpha_bar_pair(denoiser.schedule, timesteps, i, x)
        if i == len(timesteps) - 1:
            x_next = out.x0
        else:
            sig_t, sig_s = _sigma(abar_t), _sigma(abar_s)
            x_scaled = x / abar_t.sqrt()
            x_next = x_scaled + (sig_s - sig_t) * out.eps  # Euler
            if i > 0:
                s_batch = torch.full_like(t_batch, int(timesteps[i + 1]))
                eps_s = denoiser(x_next * abar_s.sqrt(), s_batch, label).eps
                x_next = x_scaled + (sig_s - sig_t) * (out.eps + eps_s) / 2
            x_next = x_next * abar_s.sqrt()
        if callback is not None:
            callback(i=i, t=t, x=x, x0=out.x0, x_next=x_next)
        x = x_next
    return x


def _sigma(abar: torch.Tensor) -> torch.Tensor:
    """σ̃ = √((1 − ᾱ)/ᾱ), the noise level of x̃ = x/√ᾱ."""
    return ((1 - abar) / abar).sqrt()
