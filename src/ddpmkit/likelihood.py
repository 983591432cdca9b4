"""Negative log-likelihood of data under a trained model.

`vlb_bpd`: the full variational bound of Ho et al. 2020 (Eq. 5) in bits per dimension,
computed term by term as improved-diffusion's `calc_bpd_loop` does: L_T (prior) + Σ_t L_t,
with the discretised Gaussian decoder for L_0 on 8-bit images (so the result is an upper
bound on the NLL of the discrete data) or the Gaussian density for continuous data
(then it bounds −log p(x) per dimension in bits and may be negative).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from . import process
from ._tensor import randn_like
from .denoiser import DenoiserLike


@dataclass
class VLB:
    total: torch.Tensor  # [B] bits per dim: prior + Σ_t terms
    prior: torch.Tensor  # [B] L_T
    terms: torch.Tensor  # [B, T] L_t for t = 0..T-1


@torch.no_grad()
def vlb_bpd(
    denoiser: DenoiserLike,
    x0: torch.Tensor,
    *,
    discrete: bool = True,
    label: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> VLB:
    """The variational bound per example in bits/dim, one network call per timestep."""
    schedule = denoiser.schedule
    T = schedule.num_steps
    terms = torch.empty(x0.shape[0], T, dtype=torch.float64)
    for t_int in range(T):
        t = torch.full((x0.shape[0],), t_int, device=x0.device, dtype=torch.long)
        x_t = process.q_sample(schedule, x0, t, randn_like(x0, generator))
        out = denoiser(x_t, t, label)
        mean, log_variance = process.p_mean_variance(schedule, denoiser.variance, x_t, t, out.x0, out.var_frac)
        terms[:, t_int] = process.vlb_term(schedule, x0, x_t, t, mean, log_variance, discrete).double().cpu()
    prior = process.prior_bpd(schedule, x0).double().cpu()
    return VLB(total=prior + terms.sum(1), prior=prior, terms=terms)
