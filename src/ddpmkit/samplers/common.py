"""What every sampler shares: the callback protocol, ᾱ at a grid step and the next, and the
Trajectory callback that keeps the intermediate states."""

from __future__ import annotations

from typing import Protocol

import torch

from .._tensor import extract
from ..schedules import NoiseSchedule


class Callback(Protocol):
    def __call__(self, *, i: int, t: int, x: torch.Tensor, x0: torch.Tensor, x_next: torch.Tensor) -> None: ...


def alpha_bar_pair(schedule: NoiseSchedule, timesteps: torch.Tensor, i: int, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """ᾱ at the grid's step i and at the step after it (1 after the last), shaped for x."""
    return alpha_bar_at(schedule, int(timesteps[i]), int(timesteps[i + 1]) if i + 1 < len(timesteps) else None, x)


def alpha_bar_at(schedule: NoiseSchedule, t: int, s: int | None, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """ᾱ_t and ᾱ_s (1 for s None: the data), shaped for x."""
    t_batch = torch.full((x.shape[0],), t, device=x.device, dtype=torch.long)
    abar_t = extract(schedule.alphas_cumprod, t_batch, x)
    if s is None:
        return abar_t, torch.ones_like(abar_t)
    return abar_t, extract(schedule.alphas_cumprod, torch.full_like(t_batch, s), x)


class Trajectory:
    """A callback that keeps x_t and x̂_0 at chosen timesteps (all when `keep` is None).

    After sampling, `steps[k]` is the timestep of `xs[k]` (the state *before* the
    denoising step at that t) and `x0s[k]` the denoiser's x̂_0 there.
    """

    def __init__(self, keep: set[int] | list[int] | None = None):
        self.keep = None if keep is None else set(int(k) for k in keep)
        self.steps: list[int] = []
        self.xs: list[torch.Tensor] = []
        self.x0s: list[torch.Tensor] = []

    def __call__(self, *, i: int, t: int, x: torch.Tensor, x0: torch.Tensor, x_next: torch.Tensor) -> None:
        if self.keep is None or t in self.keep:
            self.steps.append(t)
            self.xs.append(x.detach().cpu())
            self.x0s.append(x0.detach().cpu())

    def only(self, steps) -> "Trajectory":
        """The states kept at `steps` alone, in the order they were kept."""
        wanted = set(int(t) for t in steps)
        kept = Trajectory(wanted)
        for t, x, x0 in zip(self.steps, self.xs, self.x0s):
            if t in wanted:
                kept.steps.append(t)
                kept.xs.append(x)
                kept.x0s.append(x0)
        return kept
