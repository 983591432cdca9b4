"""The training objective over a Denoiser (L_simple of Ho et al. 2020, Eq. 14)."""

from __future__ import annotations

from typing import Literal, get_args

import torch
import torch.nn.functional as F

from . import process
from ._tensor import extract
from .denoiser import Denoiser
from .errors import UserError

LossType = Literal["l2", "l1", "huber"]
LOSSES: tuple[str, ...] = get_args(LossType)


def sample_timesteps(batch_size: int, num_steps: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Uniform t ∈ {0..T-1} (line 3 of Algorithm 1 of Ho et al. 2020), on the generator's device."""
    device = generator.device if generator is not None else None
    return torch.randint(0, num_steps, (batch_size,), generator=generator, device=device)


def elementwise(pred: torch.Tensor, target: torch.Tensor, loss: str) -> torch.Tensor:
    if loss == "l2":
        return F.mse_loss(pred, target, reduction="none")
    if loss == "l1":
        return F.l1_loss(pred, target, reduction="none")
    if loss == "huber":
        return F.smooth_l1_loss(pred, target, reduction="none", beta=1.0)
    raise UserError(f"unknown loss {loss!r}; choose one of: {', '.join(LOSSES)}")


def min_snr_weight(schedule, t: torch.Tensor, x: torch.Tensor, gamma: float, prediction: str) -> torch.Tensor:
    """Min-SNR-γ loss weight (Hang et al. 2023): min(SNR_t, γ) over what the target's loss
    already weighs by: SNR for ε, 1 for x_0, SNR + 1 for v. SNR_t = ᾱ_t / (1 − ᾱ_t)."""
    snr = extract(schedule.alphas_cumprod / (1 - schedule.alphas_cumprod), t, x).flatten()
    clipped = snr.clamp(max=gamma)
    if prediction == "eps":
        return clipped / snr
    if prediction == "x0":
        return clipped
    return clipped / (snr + 1)


def training_losses(
    denoiser: Denoiser,
    x0: torch.Tensor,
    t: torch.Tensor,
    noise: torch.Tensor,
    loss: str = "l2",
    label: torch.Tensor | None = None,
    min_snr_gamma: float = 0.0,
    discrete: bool = True,
) -> torch.Tensor:
    """Per-sample loss [B]: the network's output at x_t = q_sample(x0, t, noise) against
    its target (ε, x_0 or v), averaged over every non-batch dim; optionally min-SNR-γ
    weighted. With a learned variance, the hybrid L_simple + λ·L_vlb of Nichol & Dhariwal
    2021 (λ = 0.001, L_vlb = T·L_t in bits/dim) with the mean stopped from L_vlb's gradient,
    so L_vlb trains only the variance. `discrete`: 8-bit data (the L_0 decoder)."""
    schedule = denoiser.schedule
    x_t = process.q_sample(schedule, x0, t, noise)
    out = denoiser.raw(x_t, t, label)
    pred, frac = denoiser.split(out)
    per_sample = elementwise(pred, denoiser.target(x0, noise, t), loss).flatten(1).mean(1)
    if min_snr_gamma > 0:
        per_sample = per_sample * min_snr_weight(schedule, t, x0, min_snr_gamma, denoiser.prediction)
    if frac is None:
        return per_sample
    frozen = denoiser.from_raw(x_t, t, torch.cat([pred.detach(), out.chunk(2, dim=1)[1]], dim=1))
    mean, log_variance = process.p_mean_variance(schedule, denoiser.variance, x_t, t, frozen.x0, frozen.var_frac)
    vlb = process.vlb_term(schedule, x0, x_t, t, mean, log_variance, discrete)
    return per_sample + vlb * (schedule.num_steps / 1000.0)
