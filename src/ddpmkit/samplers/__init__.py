"""Samplers: one function per file, one signature,

    sample(denoiser, x_T, timesteps, *, label=None, generator=None, callback=None)

`timesteps` is a descending tensor of indices into the training schedule ending at
the last step taken (usually 0); after it comes the data, ᾱ = 1. Samplers never ask
what the network predicts: the denoiser gives them x̂_0 and ε̂.

`SAMPLERS` maps each name to a `Sampler`: the function (calling the entry calls it), the
number of network evaluations it spends on a grid of n steps, and the timesteps it evaluates the
network at on a given grid (what a guidance interval counts its passes by), declared beside it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from . import ddim, ddpm, dpm_solver, heun
from .common import Callback, Trajectory, alpha_bar_pair  # noqa: F401  (the samplers' shared names)


def one_per_step(steps: int) -> int:
    """Network evaluations of a sampler that calls the denoiser once per grid step."""
    return steps


def every_step(timesteps: list[int]) -> list[int]:
    """The timesteps a sampler that calls the denoiser once per grid step evaluates it at: each of them."""
    return list(timesteps)


@dataclass(frozen=True)
class Sampler:
    """A sampler function and its cost: `network_evaluations(n)` denoiser calls per sample
    on a grid of n steps (NFE), and `evaluated_at(grid)`, the timestep of each of those calls on
    a given grid (len(evaluated_at(grid)) == network_evaluations(len(grid)))."""

    sample: Callable[..., torch.Tensor]
    network_evaluations: Callable[[int], int] = one_per_step
    evaluated_at: Callable[[list[int]], list[int]] = every_step

    def __call__(self, denoiser, x_T: torch.Tensor, timesteps: torch.Tensor, **options) -> torch.Tensor:
        return self.sample(denoiser, x_T, timesteps, **options)


SAMPLERS: dict[str, Sampler] = {
    "ddpm": Sampler(ddpm.sample),
    "ddim": Sampler(ddim.sample),
    "dpm++": Sampler(dpm_solver.sample),
    "dpm++sde": Sampler(dpm_solver.sample_sde),
    "heun": Sampler(heun.sample, heun.network_evaluations, heun.evaluated_at),
}
