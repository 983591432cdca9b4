"""Negative log-likelihood of data under a trained model, two ways.

`vlb_bpd`: the full variational bound of Ho et al. 2020 (Eq. 5) in bits per dimension,
computed term by term as improved-diffusion's `calc_bpd_loop` does: L_T (prior) + Σ_t L_t,
with the discretised Gaussian decoder for L_0 on 8-bit images (so the result is an upper
bound on the NLL of the discrete data) or the Gaussian density for continuous data
(then it bounds −log p(x) per dimension in bits and may be negative).

`ode_log_likelihood`: the exact log-density of the probability-flow ODE's model
(Sec. 4.3 and App. D.2 of Song et al. 2021, "Score-based generative modeling through SDEs"):
the instantaneous change of variables, with the divergence exact (autograd, one pass per
dimension; for low-dimensional data) or Hutchinson's unbiased estimate (images).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from . import process
from ._tensor import randn_like
from .denoiser import DenoiserLike
from .schedules import log_snr


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


@dataclass
class ODELikelihood:
    log_density: torch.Tensor  # [B] log p(x) in nats, of x where it was given (model space)
    prior: torch.Tensor  # [B] log N(x_T; 0, I), nats
    delta: torch.Tensor  # [B] ∫ div f dλ, nats
    latent: torch.Tensor  # [B, ...] x_T, the ODE's encoding of x


def lambda_grid(schedule, num_points: int) -> torch.Tensor:
    """Ascending timesteps 0 … T−1, about `num_points` of them, evenly spread in
    λ = ½·log(ᾱ/(1 − ᾱ)) (the integrand below is smooth in λ; DPM-Solver's "logSNR" grid)."""
    abar = schedule.alphas_cumprod.double().cpu()
    lam = 0.5 * log_snr(abar)  # descending in t
    targets = torch.linspace(float(lam[0]), float(lam[-1]), num_points, dtype=torch.float64)
    nearest = (lam[None, :] - targets[:, None]).abs().argmin(dim=1)
    return torch.unique(torch.cat([torch.tensor([0, len(abar) - 1]), nearest]))


def ode_log_likelihood(
    denoiser: DenoiserLike,
    x: torch.Tensor,
    *,
    num_points: int = 100,
    exact_trace: bool | None = None,
    label: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> ODELikelihood:
    """log p(x) under the probability-flow ODE, with x taken as the state at t = 0.

    Notation: α = √ᾱ_t, σ = √(1 − ᾱ_t), λ = log(α/σ). In λ the PF-ODE of the VP process is
    dx/dλ = σ·(σ·x − ε̂(x, t)) =: f (from DPM-Solver++'s dx/dλ = −α²·x + α·x̂_0), smooth in λ
    from the data to the noise; so log p_0(x_0) = log N(x_T; 0, I) + ∫_{λ_0}^{λ_T} div f dλ,
    div f = σ²·D − σ·div ε̂. Heun's method on `lambda_grid(num_points)`, state and ∫ together.
    The divergence is exact when `exact_trace` (default: data of at most 8 dimensions),
    else Hutchinson's estimate z^T (∂ε̂/∂x) z with one Rademacher z per example, fixed along
    the path (Grathwohl et al. 2019, FFJORD), which keeps log p unbiased per example.
    """
    schedule = denoiser.schedule
    dims = x[0].numel()
    exact_trace = dims <= 8 if exact_trace is None else exact_trace
    z = None if exact_trace else (torch.randint(0, 2, x.shape, generator=generator).to(x) * 2 - 1)
    grid = lambda_grid(schedule, num_points).tolist()

    def field(x_in: torch.Tensor, t: int) -> tuple[torch.Tensor, torch.Tensor]:
        abar = schedule.alphas_cumprod[t].to(torch.float64)
        sigma = float((1 - abar).sqrt())
        with torch.enable_grad():
            x_in = x_in.detach().requires_grad_(True)
            eps = denoiser(x_in, torch.full((x.shape[0],), t, device=x.device, dtype=torch.long), label).eps
            if exact_trace:
                flat = eps.flatten(1)
                div = sum(
                    torch.autograd.grad(flat[:, i].sum(), x_in, retain_graph=i < dims - 1)[0].flatten(1)[:, i]
                    for i in range(dims)
                )
            else:
                div = (torch.autograd.grad(eps, x_in, z)[0] * z).flatten(1).sum(1)
        f = sigma * (sigma * x_in.detach() - eps.detach())
        return f, (sigma**2 * dims - sigma * div.detach()).double()

    delta = torch.zeros(x.shape[0], dtype=torch.float64, device=x.device)
    f, div = field(x, grid[0])
    for t, t_next in zip(grid[:-1], grid[1:]):
        h = float(_lam(schedule, t_next) - _lam(schedule, t))  # < 0: towards the noise
        x_euler = x + h * f
        f_next, div_next = field(x_euler, t_next)
        x = x + h * (f + f_next) / 2
        delta = delta + h * (div + div_next) / 2
        f, div = field(x, t_next) if t_next != grid[-1] else (f_next, div_next)
    prior = (-0.5 * x.double().pow(2) - 0.5 * math.log(2 * math.pi)).flatten(1).sum(1)
    return ODELikelihood(log_density=(prior + delta).cpu(), prior=prior.cpu(), delta=delta.cpu(), latent=x.detach().cpu())


def _lam(schedule, t: int) -> float:
    """λ = log(α/σ), the half log-SNR, at timestep t."""
    return float(0.5 * log_snr(schedule.alphas_cumprod[t].double()))
