"""DPM-Solver++(2M): Algorithm 2 of Lu et al. 2022 ("DPM-Solver++"), multistep, data prediction;
and its SDE form, SDE-DPM-Solver++(2M) (Sec. 5 and Appendix B of the same paper)."""

from __future__ import annotations

import torch

from .._tensor import randn_like
from ..denoiser import DenoiserLike
from ..schedules import log_snr
from .common import Callback, alpha_bar_pair


@torch.no_grad()
def sample(
    denoiser: DenoiserLike,
    x_T: torch.Tensor,
    timesteps: torch.Tensor,
    *,
    label: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
    order: int = 2,
    eta: float = 0.0,
) -> torch.Tensor:
    """Solve the probability-flow ODE in λ = log(α/σ) with the exponential integrator on x̂_0
    (η = 0), or the reverse diffusion SDE (η = 1; `sample_sde`).

    Notation: α_t = √ᾱ_t, σ_t = √(1 − ᾱ_t), λ_t = log α_t − log σ_t, h = λ_s − λ_t for the
    step t -> s. First order: x_s = (σ_s/σ_t)·x_t − α_s·(e^{−h} − 1)·x̂_0, which is exactly
    DDIM with η = 0. Second order (multistep) replaces x̂_0 by
    D = (1 + 1/(2r))·x̂_0(t) − 1/(2r)·x̂_0(t_prev), r = h_prev/h. The last two steps are first
    order ("lower order final", as diffusers' DPMSolverMultistepScheduler offers): the step
    onto the grid's last point (usually t = 0, whose tiny σ makes h several times h_prev, so
    r ≪ 1 would amplify the extrapolation), and the jump into the data (σ_s = 0, h = ∞),
    which returns x̂_0. On Gaussian data at 20 steps this cut the error to the exact ODE
    solution 3-13× (tests/test_samplers.py).
    With η > 0 a share of the step is taken by the SDE (as k-diffusion's dpmpp_2m_sde):
    x_s = (σ_s/σ_t)·e^{−ηh}·x_t + α_s·(1 − e^{−(1+η)h})·D + σ_s·√(1 − e^{−2ηh})·z; at η = 1
    and first order that is exactly DDPM's ancestral step with σ² = β̃ (tested).
    `order` 1 or 2; `generator` draws z (unused at η = 0, where the solver is deterministic).
    """
    if order not in (1, 2):
        raise ValueError(f"order must be 1 or 2, got {order}")
    x = x_T
    prev_x0: torch.Tensor | None = None
    prev_h: torch.Tensor | None = None
    for i, t in enumerate(timesteps.tolist()):
        t_batch = torch.full((x.shape[0],), t, device=x.device, dtype=torch.long)
        out = denoiser(x, t_batch, label)
        abar_t, abar_s = alpha_bar_pair(denoiser.schedule, timesteps, i, x)
        if i == len(timesteps) - 1:
            x_next = out.x0
        else:
            alpha_s, sigma_s, sigma_t = abar_s.sqrt(), (1 - abar_s).sqrt(), (1 - abar_t).sqrt()
            h = _lam(abar_s) - _lam(abar_t)
            d = out.x0
            if order == 2 and prev_x0 is not None and i < len(timesteps) - 2:
                r = prev_h / h
                d = (1 + 1 / (2 * r)) * out.x0 - 1 / (2 * r) * prev_x0
            x_next = (sigma_s / sigma_t) * torch.exp(-eta * h) * x - alpha_s * torch.expm1(-(1 + eta) * h) * d
            if eta > 0:
                x_next = x_next + sigma_s * (-torch.expm1(-2 * eta * h)).sqrt() * randn_like(x, generator)
            prev_x0, prev_h = out.x0, h
        if callback is not None:
            callback(i=i, t=t, x=x, x0=out.x0, x_next=x_next)
        x = x_next
    return x


@torch.no_grad()
def sample_sde(
    denoiser: DenoiserLike,
    x_T: torch.Tensor,
    timesteps: torch.Tensor,
    *,
    label: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
    order: int = 2,
) -> torch.Tensor:
    """SDE-DPM-Solver++(2M) (Lu et al. 2022): the same multistep on x̂_0 for the reverse SDE,
    fresh noise each step. Stochastic like DDPM, so it corrects the network's errors along the
    way where the ODE carries them to the end; on the default digits run 20 steps beat 1,000
    of DDPM (README, samplers table)."""
    return sample(denoiser, x_T, timesteps, label=label, generator=generator, callback=callback, order=order, eta=1.0)


def _lam(abar: torch.Tensor) -> torch.Tensor:
    """λ = log(α/σ), the half log-SNR."""
    return 0.5 * log_snr(abar)
