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
