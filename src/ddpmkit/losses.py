"""The training objective over a Denoiser (L_simple of Ho et al. 2020, Eq. 14)."""

from __future__ import annotations

from typing import Literal, get_args

import torch
import torch.nn.functional as F

from . import process
from .denoiser import Denoiser
from .errors import UserError

LossType = Literal["l2", "l1", "huber"]
LOSSES: tuple[str, ...] = get_args(LossType)


def check_loss(name: str) -> str:
    if name not in LOSSES:
        raise UserError(f"unknown loss {name!r}; choose one of: {', '.join(LOSSES)}")
    return name


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


def training_losses(
    denoiser: Denoiser,
    x0: torch.Tensor,
    t: torch.Tensor,
    noise: torch.Tensor,
    loss: str = "l2",
    label: torch.Tensor | None = None,
) -> torch.Tensor:
    """Per-sample loss [B]: the network's output at x_t = q_sample(x0, t, noise) against
    its target (ε, x_0 or v), averaged over every non-batch dim."""
    x_t = process.q_sample(denoiser.schedule, x0, t, noise)
    pred = denoiser.raw(x_t, t, label)
    return elementwise(pred, denoiser.target(x0, noise, t), loss).flatten(1).mean(1)
