"""RePaint: Lugmayr et al. 2022, "RePaint: Inpainting using Denoising Diffusion Probabilistic
Models" (Algorithm 1 and the jump schedule of Sec. 4.2), on any descending timestep grid.

Notation: m the mask of the KNOWN pixels (1 keep, 0 fill in; the user's mask is its complement,
white = fill in), x₀ the input. Grid positions p = 0 … n: p < n is the state at timestep g_p,
p = n the data (ᾱ = 1). A reverse step p → p+1 joins
    x_{p+1} = m ⊙ q_sample(x₀, g_{p+1}) + (1 − m) ⊙ step(x_p)          (their Eq. 8)
with x₀ itself at p+1 = n, so the known pixels of the result are the input's. Resampling
(their Sec. 4.2): every `jump` positions the state is noised forward `jump` positions at once,
x_{p−j} ~ q(x_{g_{p−j}} | x_{g_p}) = N(√(ᾱ_{g_{p−j}}/ᾱ_{g_p})·x_p, (1 − ᾱ_{g_{p−j}}/ᾱ_{g_p})·I)
(drawn one position at a time, their one-step "jumps back", whose product is that
Gaussian), and denoised again, so that each
such stretch is walked `resample` times in all (their r; r = 1 is plain replacement).
"""

from __future__ import annotations

from typing import Literal, get_args

import torch

from .._tensor import extract, randn_like
from ..denoiser import DenoiserLike
from ..errors import UserError, check_positive
from ..samplers import ddim, ddpm

RepaintSampler = Literal["ddpm", "ddim"]
REPAINT_SAMPLERS: tuple[str, ...] = get_args(RepaintSampler)  # ddpm: RePaint's ancestral step; ddim: its deterministic step
# RePaint's own sampling default (sampler, steps; None: all T), where `sample`'s cannot serve: the one-step reverse step
# walked back and forth over every step (multistep solvers cannot jump back).
REPAINT = ("ddpm", None)


def check_inpaint_sampler(sampler: str | None) -> None:
    """RePaint takes a one-step sampler: ddpm (as the paper) or ddim; multistep solvers keep a
    history that the jumps back would break (None: not chosen yet, RePaint's own default)."""
    if sampler is not None and sampler not in REPAINT_SAMPLERS:
        raise UserError(f"inpaint takes --sampler {' or '.join(REPAINT_SAMPLERS)} (RePaint's step is the one-step "
                        f"reverse step; multistep and two-stage solvers cannot jump back), not {sampler!r}")


def jump_schedule(n: int, resample: int = 1, jump: int = 1) -> list[int]:
    """The grid positions RePaint visits, 0 (the noise, g_0) … n (the data), for a grid of n
    timesteps: down one position at a time (a reverse step), and from each position q = n−1−k·j
    (k = 0, 1, …, counted from the data's end, with q ≥ j) back up to q − j, `resample` − 1 times
    (RePaint's `get_schedule_jump`, in grid positions). resample = 1: 0, 1, …, n."""
    check_positive("--resample", resample)
    check_positive("--jump", jump)
    left = {q: resample - 1 for q in range(n - 1, jump - 1, -jump)}
    p, path = 0, [0]
    while p < n:
        p += 1
        path.append(p)
        while left.get(p, 0) > 0:
            left[p] -= 1
            for _ in range(jump):
                p -= 1
                path.append(p)
            for _ in range(jump):
                p += 1
                path.append(p)
    return path


def network_evaluations(n: int, resample: int = 1, jump: int = 1) -> int:
    """Denoiser calls of RePaint on a grid of n steps: one per reverse step of `jump_schedule`."""
    path = jump_schedule(n, resample, jump)
    return sum(b > a for a, b in zip(path, path[1:]))


@torch.no_grad()
def repaint(
    denoiser: DenoiserLike,
    x0: torch.Tensor,
    keep: torch.Tensor,
    timesteps: torch.Tensor,
    *,
    sampler: str = "ddpm",
    resample: int = 1,
    jump: int = 1,
    label: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    eta: float = 0.0,
) -> torch.Tensor:
    """Fill in the pixels where `keep` is 0 of x₀ [B, ...] (model space), keeping those where it
    is 1 (`keep` broadcasts against x₀: [B or 1, 1 or C, H, W]), down the descending
    `timesteps` with RePaint's jumps. The noise x_{g_0} and every q_sample of the known part are
    drawn from `generator`. `eta`: ddim only (0 deterministic). Returns the joined result, whose
    known pixels are x₀'s exactly."""
    check_inpaint_sampler(sampler)
    keep = keep.to(x0)
    grid = [int(t) for t in timesteps]
    n = len(grid)
    schedule = denoiser.schedule

    def abar(p: int) -> torch.Tensor:  # ᾱ at grid position p, shaped for x₀
        return extract(schedule.alphas_cumprod, torch.full((x0.shape[0],), grid[p], device=x0.device), x0)

    def known(p: int) -> torch.Tensor:  # the input noised to position p (itself at p = n)
        if p == n:
            return x0
        a = abar(p)
        return a.sqrt() * x0 + (1 - a).sqrt() * randn_like(x0, generator)

    x = randn_like(x0, generator)
    x = keep * known(0) + (1 - keep) * x
    path = jump_schedule(n, resample, jump)
    for p, q in zip(path, path[1:]):
        if q > p:  # a reverse step from g_p to g_{p+1} (into the data at p + 1 = n), then the join
            s = grid[q] if q < n else None
            if sampler == "ddpm":
                x, _ = ddpm.step(denoiser, x, grid[p], s, label=label, generator=generator)
            else:
                x, _ = ddim.step(denoiser, x, grid[p], s, label=label, generator=generator, eta=eta)
            x = keep * known(q) + (1 - keep) * x
        else:  # a jump back: noised forward from position p to q = p − 1 (a run of them is one stretch)
            ratio = abar(q) / abar(p)
            x = ratio.sqrt() * x + (1 - ratio).sqrt() * randn_like(x, generator)
    return x
