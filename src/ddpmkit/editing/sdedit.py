"""SDEdit: Meng et al. 2022, "SDEdit: Guided Image Synthesis and Editing with Stochastic
Differential Equations" (Sec. 3 and Algorithm 1): perturb a guide image to an intermediate
time t₀ of the forward process and run the reverse process from there.

Notation: s the strength in [0, 1] (their t₀ as a share of the trajectory), T the trained
steps; t₀ = round(s·T) in paper steps, i.e. timestep index t₀ − 1 (schedules.py's convention);
x_{t₀} = √ᾱ_{t₀}·x₀ + √(1 − ᾱ_{t₀})·ε (q_sample), then any sampler down a grid from t₀ to 0.
"""

from __future__ import annotations

import torch

from .. import process
from .._tensor import randn_like
from ..denoiser import DenoiserLike
from ..errors import check_between
from ..samplers import SAMPLERS
from ..schedules import timestep_grid


def start_step(strength: float, T: int) -> int | None:
    """The timestep index the edit starts from, round(s·T) − 1 (None for s·T < ½: no noise, the input itself)."""
    check_between("--strength", strength, 0, 1, what="the share of the forward process the input is noised through (0: "
                  "unchanged, 1: plain sampling)")
    k = round(strength * T)
    return None if k == 0 else k - 1


def edit_grid(strength: float, T: int, steps: int | None = None, spacing: str = "linspace") -> torch.Tensor:
    """The descending timesteps of an edit at strength s: with `steps` None every timestep from
    t₀ down to 0; else max(1, round(s·steps)) of them spread over t₀..0 by `spacing`, so --steps
    counts the steps of a full draw, as for `sample` (diffusers' img2img counts them so too).
    At s = 1 this is exactly sample's grid. Empty when s·T rounds to 0."""
    t0 = start_step(strength, T)
    if t0 is None:
        return torch.zeros(0, dtype=torch.long)
    if steps is None:
        return torch.arange(t0, -1, -1)
    return timestep_grid(t0 + 1, min(max(1, round(strength * steps)), t0 + 1), spacing)


def sdedit(
    denoiser: DenoiserLike,
    x0: torch.Tensor,
    strength: float,
    *,
    sampler: str = "ddpm",
    steps: int | None = None,
    spacing: str = "linspace",
    label: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    **sampler_options,
) -> torch.Tensor:
    """x₀ [B, ...] (model space) noised to t₀ and denoised by `sampler` on `edit_grid`.

    s = 0 returns x₀ itself (no network call); s = 1 starts from the noise ε alone, so the
    edit is `sampling.draw` with the same generator draw for draw (its x_T is ε, drawn first).
    `denoiser` is any DenoiserLike (guided, clipped, ...): it is passed to the sampler as is."""
    grid = edit_grid(strength, denoiser.schedule.num_steps, steps, spacing)
    if len(grid) == 0:
        return x0.clone()
    noise = randn_like(x0, generator)
    if strength == 1:
        x_t0 = noise  # the prior N(0, I), as sampling assumes ᾱ_T ≈ 0: the input is ignored
    else:
        x_t0 = process.q_sample(denoiser.schedule, x0, torch.full((x0.shape[0],), int(grid[0]), device=x0.device), noise)
    return SAMPLERS[sampler](denoiser, x_t0, grid, label=label, generator=generator, **sampler_options)
