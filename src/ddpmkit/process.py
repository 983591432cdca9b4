"""The Gaussian diffusion process as pure math: no network, no state.

Notation: x_0 data, x_t noisy data, ε ~ N(0, I), ᾱ_t = alphas_cumprod[t],
v = √ᾱ_t·ε − √(1−ᾱ_t)·x_0 (Salimans & Ho 2022). Timesteps index the schedule's
tables as described in schedules.py.
"""

from __future__ import annotations

import math

import torch

from ._tensor import extract
from .schedules import NoiseSchedule


def q_sample(schedule: NoiseSchedule, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """x_t = √ᾱ_t·x_0 + √(1−ᾱ_t)·ε, a draw from q(x_t | x_0) (Eq. 4 of Ho et al. 2020)."""
    return extract(schedule.sqrt_alphas_cumprod, t, x0) * x0 + extract(schedule.sqrt_one_minus_alphas_cumprod, t, x0) * noise


def q_mean_variance(schedule: NoiseSchedule, x0: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean √ᾱ_t·x_0 and variance 1−ᾱ_t of q(x_t | x_0)."""
    return extract(schedule.sqrt_alphas_cumprod, t, x0) * x0, extract(1 - schedule.alphas_cumprod, t, x0).expand_as(x0)


def q_posterior(
    schedule: NoiseSchedule, x0: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Mean, variance and clipped log-variance of q(x_{t-1} | x_t, x_0) (Eqs. 6-7 of Ho et al. 2020)."""
    mean = extract(schedule.posterior_mean_coef1, t, x_t) * x0 + extract(schedule.posterior_mean_coef2, t, x_t) * x_t
    variance = extract(schedule.posterior_variance, t, x_t)
    log_variance = extract(schedule.posterior_log_variance_clipped, t, x_t)
    return mean, variance, log_variance


def x0_from_eps(schedule: NoiseSchedule, x_t: torch.Tensor, t: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """x̂_0 = (x_t − √(1−ᾱ_t)·ε̂) / √ᾱ_t, Eq. 4 solved for x_0."""
    return extract(schedule.sqrt_recip_alphas_cumprod, t, x_t) * x_t - extract(schedule.sqrt_recipm1_alphas_cumprod, t, x_t) * eps


def eps_from_x0(schedule: NoiseSchedule, x_t: torch.Tensor, t: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
    """ε̂ = (x_t − √ᾱ_t·x̂_0) / √(1−ᾱ_t), Eq. 4 solved for ε."""
    return (extract(schedule.sqrt_recip_alphas_cumprod, t, x_t) * x_t - x0) / extract(schedule.sqrt_recipm1_alphas_cumprod, t, x_t)


def v_from_x0_eps(schedule: NoiseSchedule, x0: torch.Tensor, t: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """v = √ᾱ_t·ε − √(1−ᾱ_t)·x_0 (Eq. 10 area of Salimans & Ho 2022)."""
    return extract(schedule.sqrt_alphas_cumprod, t, x0) * eps - extract(schedule.sqrt_one_minus_alphas_cumprod, t, x0) * x0


def x0_from_v(schedule: NoiseSchedule, x_t: torch.Tensor, t: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """x̂_0 = √ᾱ_t·x_t − √(1−ᾱ_t)·v̂."""
    return extract(schedule.sqrt_alphas_cumprod, t, x_t) * x_t - extract(schedule.sqrt_one_minus_alphas_cumprod, t, x_t) * v


def reverse_log_variance(variance: str, beta: torch.Tensor, beta_tilde: torch.Tensor, var_frac: torch.Tensor | None) -> torch.Tensor:
    """log σ² of p(x_s | x_t) for a jump with forward variance β and posterior variance β̃
    (both away from 0: clipped by the caller): β̃ (fixed_small), β (fixed_large), or the learned
    interpolation f·log β + (1−f)·log β̃ (Eq. 15 of Nichol & Dhariwal 2021; f is not clamped to
    [0, 1], so log σ² may extrapolate beyond either end, as in improved-diffusion)."""
    if variance == "fixed_small":
        return beta_tilde.log()
    if variance == "fixed_large":
        return beta.log()
    return var_frac * beta.log() + (1 - var_frac) * beta_tilde.log()


def p_mean_variance(
    schedule: NoiseSchedule, variance: str, x_t: torch.Tensor, t: torch.Tensor, x0: torch.Tensor, var_frac: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and log-variance of p(x_{t-1} | x_t) between adjacent steps: the posterior mean
    at x̂_0 (Eq. 7 of Ho et al. 2020) and σ² chosen by `variance`: β̃_t (clipped at t = 0),
    β_t with β̃ at t = 0 (fixed_large, the schedule's table), or the learned interpolation
    of log β_t and the clipped log β̃_t (improved-diffusion's `p_mean_variance`)."""
    mean, _, _ = q_posterior(schedule, x0, x_t, t)
    if variance == "fixed_large":
        return mean, extract(schedule.fixed_large_log_variance, t, x_t)
    beta = extract(schedule.betas, t, x_t)
    beta_tilde = extract(schedule.posterior_log_variance_clipped, t, x_t).exp()
    return mean, reverse_log_variance(variance, beta, beta_tilde, var_frac)


def normal_kl(mean1: torch.Tensor, logvar1: torch.Tensor, mean2: torch.Tensor, logvar2: torch.Tensor) -> torch.Tensor:
    """KL(N(mean1, e^logvar1) ‖ N(mean2, e^logvar2)) elementwise, in nats."""
    return 0.5 * (-1.0 + logvar2 - logvar1 + torch.exp(logvar1 - logvar2) + (mean1 - mean2) ** 2 * torch.exp(-logvar2))


def _approx_standard_normal_cdf(x: torch.Tensor) -> torch.Tensor:
    return 0.5 * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))


def discretized_gaussian_log_likelihood(x: torch.Tensor, mean: torch.Tensor, log_scale: torch.Tensor) -> torch.Tensor:
    """log p(x) of 8-bit data x ∈ [-1, 1] under N(mean, e^{2·log_scale}) integrated over
    each pixel's bin of width 2/255, edges open (the L_0 decoder of Ho et al. 2020, Sec. 3.3)."""
    centred = x - mean
    inv_std = torch.exp(-log_scale)
    cdf_plus = _approx_standard_normal_cdf(inv_std * (centred + 1.0 / 255.0))
    cdf_min = _approx_standard_normal_cdf(inv_std * (centred - 1.0 / 255.0))
    log_cdf_plus = torch.log(cdf_plus.clamp(min=1e-12))
    log_one_minus_cdf_min = torch.log((1.0 - cdf_min).clamp(min=1e-12))
    log_delta = torch.log((cdf_plus - cdf_min).clamp(min=1e-12))
    return torch.where(x < -0.999, log_cdf_plus, torch.where(x > 0.999, log_one_minus_cdf_min, log_delta))


def gaussian_log_density(x: torch.Tensor, mean: torch.Tensor, log_variance: torch.Tensor) -> torch.Tensor:
    """log N(x; mean, e^log_variance) elementwise, in nats (the L_0 decoder for continuous data)."""
    return -0.5 * (math.log(2 * math.pi) + log_variance + (x - mean) ** 2 * torch.exp(-log_variance))


def vlb_term(
    schedule: NoiseSchedule,
    x0: torch.Tensor,
    x_t: torch.Tensor,
    t: torch.Tensor,
    mean: torch.Tensor,
    log_variance: torch.Tensor,
    discrete: bool = True,
) -> torch.Tensor:
    """L_t of the variational bound (Eq. 5 of Ho et al. 2020) per example, in bits per dim:
    KL(q(x_{t-1} | x_t, x_0) ‖ N(mean, e^log_variance)) for t > 0, and −log p(x_0 | x_1) for
    t = 0, with the discretised decoder for 8-bit data (`discrete`) or the Gaussian density."""
    true_mean, _, true_log_variance = q_posterior(schedule, x0, x_t, t)
    kl = normal_kl(true_mean, true_log_variance, mean, log_variance).flatten(1).mean(1)
    if discrete:
        nll = -discretized_gaussian_log_likelihood(x0, mean, 0.5 * log_variance)
    else:
        nll = -gaussian_log_density(x0, mean, log_variance.expand_as(x0))
    nll = nll.flatten(1).mean(1)
    return torch.where(t == 0, nll, kl) / math.log(2.0)


def prior_bpd(schedule: NoiseSchedule, x0: torch.Tensor) -> torch.Tensor:
    """KL(q(x_T | x_0) ‖ N(0, I)) per example in bits per dim: the prior term L_T."""
    t = torch.full((x0.shape[0],), schedule.num_steps - 1, device=x0.device, dtype=torch.long)
    mean, variance = q_mean_variance(schedule, x0, t)
    kl = normal_kl(mean, torch.log(variance), torch.zeros_like(mean), torch.zeros_like(mean))
    return kl.flatten(1).mean(1) / math.log(2.0)
