"""Ancestral sampling: Algorithm 2 of Ho et al. 2020."""

from __future__ import annotations

import torch

from .._tensor import extract, randn_like
from ..denoiser import DenoiserLike
from ..schedules import posterior_coefficients
from . import Callback, alpha_bar_pair


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
    σ² = β̃ (variance "fixed_small") or β (fixed_large) of the jump s -> t, so a grid
    that skips steps samples the respaced process exactly. No noise on the last step.
    """
    x = x_T
    for i, t in enumerate(timesteps.tolist()):
        t_batch = torch.full((x.shape[0],), t, device=x.device, dtype=torch.long)
        out = denoiser(x, t_batch, label)
        abar_t, abar_s = alpha_bar_pair(denoiser.schedule, timesteps, i, x)
        coef_x0, coef_xt, var = posterior_coefficients(abar_t, abar_s)
        mean = coef_x0 * out.x0 + coef_xt * x
        last = i == len(timesteps) - 1
        if denoiser.variance == "fixed_large":
            var = 1 - abar_t / abar_s
        x_next = mean if last else mean + var.sqrt() * randn_like(x, generator)
        if callback is not None:
            callback(i=i, t=t, x=x, x0=out.x0, x_next=x_next)
        x = x_next
    return x
