"""The one broadcasting rule of the project.

Per-step coefficients live in 1-D tables indexed by integer timesteps. `extract`
gathers `table[t]` for a batch and appends singleton dims so the result
broadcasts against `x` of any rank: points [B, D], images [B, C, H, W], ...
(improved-diffusion's `_extract_into_tensor`, k-diffusion's `append_dims`).
"""

from __future__ import annotations

import torch


def append_dims(v: torch.Tensor, ndim: int) -> torch.Tensor:
    """Append trailing singleton dims to `v` until it has `ndim` dims."""
    missing = ndim - v.ndim
    if missing < 0:
        raise ValueError(f"tensor has {v.ndim} dims, more than the target {ndim}")
    return v.reshape(*v.shape, *([1] * missing))


def extract(table: torch.Tensor, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """`table[t]` as `x.dtype` on `x.device`, shaped [B, 1, ...] to broadcast with `x`."""
    values = table.to(x.device)[t.to(x.device).long()]
    return append_dims(values.to(x.dtype), x.ndim)


def randn_like(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Standard normal noise shaped like `x`, drawn from `generator` on its own device
    (so a seed gives the same numbers whatever device `x` is on), moved to `x`."""
    device = generator.device if generator is not None else x.device
    return torch.randn(x.shape, generator=generator, device=device, dtype=x.dtype).to(x.device)
