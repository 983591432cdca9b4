"""Exact denoisers for Gaussian data, where the optimal predictor has a closed form, and the
exact law of 8-bit quantised Gaussian pixels."""

import torch
from torch import nn

from ddpmkit.schedules import NoiseSchedule


def at(table: torch.Tensor, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """table[t] in float64, shaped [B, 1, ...] to broadcast against x [B, ...]."""
    return table.to(x.device)[t].double().reshape(-1, *[1] * (x.ndim - 1))


class GaussianEps(nn.Module):
    """E[ε | x_t] for data x_0 ~ N(mean, std² I): x_t ~ N(√ᾱ·mean, ᾱ·std² + 1 − ᾱ), so
    E[ε | x_t] = √(1−ᾱ)·(x_t − √ᾱ·mean) / (ᾱ·std² + 1 − ᾱ)."""

    def __init__(self, schedule: NoiseSchedule, mean: float, std: float):
        super().__init__()
        self.abar = schedule.alphas_cumprod.clone()  # float64
        self.mean, self.std = mean, std

    def forward(self, x, t, label=None):
        abar = at(self.abar, t, x)
        eps = (1 - abar).sqrt() * (x.double() - abar.sqrt() * self.mean) / (abar * self.std**2 + 1 - abar)
        return eps.to(x.dtype)


class GaussianFullEps(nn.Module):
    """E[ε | x_t] for data x_0 ~ N(mean, cov) in D dimensions: x_t ~ N(α·mean, C), C = α²·cov + σ²·I
    (α = √ᾱ, σ = √(1−ᾱ)), so E[ε | x_t] = σ·C⁻¹(x_t − α·mean). Its Jacobian is not diagonal."""

    def __init__(self, schedule: NoiseSchedule, mean: torch.Tensor, cov: torch.Tensor):
        super().__init__()
        self.abar = schedule.alphas_cumprod.clone()
        self.mean, self.cov = mean.double(), cov.double()

    def forward(self, x, t, label=None):
        abar = self.abar.to(x.device)[t].double()[:, None, None]  # [B, 1, 1]
        eye = torch.eye(len(self.mean), dtype=torch.float64)
        C = abar * self.cov + (1 - abar) * eye  # [B, D, D]
        r = (x.double() - abar[:, :, 0].sqrt() * self.mean)[..., None]  # [B, D, 1]
        return ((1 - abar).sqrt() * torch.linalg.solve(C, r))[..., 0].to(x.dtype)


class WithVariance(nn.Module):
    """An ε model with a learned-variance head that outputs the constant v = 2f − 1 in every
    channel, so the Denoiser (variance "learned_range") reads log σ² = f·log β + (1 − f)·log β̃."""

    def __init__(self, eps_model: nn.Module, frac: float):
        super().__init__()
        self.eps_model, self.v = eps_model, 2 * frac - 1

    def forward(self, x, t, label=None):
        eps = self.eps_model(x, t)
        return torch.cat([eps, torch.full_like(eps, self.v)], dim=1)


# ---- 8-bit pixels ~ N(QMEAN, QSTD²), quantised --------------------------------------------------
QMEAN, QSTD = 0.1, 0.25  # pixels ~ N(0.1, 0.25²), 8-bit quantised; P(outside [-1, 1]) ≈ 2e-4
LEVELS = torch.arange(256, dtype=torch.float64) / 127.5 - 1  # the 8-bit values in model space


def bin_probabilities() -> torch.Tensor:
    """P(pixel = level k) [256]: N(QMEAN, QSTD²) mass in each bin of width 2/255 around a
    level, the end bins open (as the discretised decoder's, and as to_uint8 clamps)."""
    upper = torch.special.ndtr((LEVELS + 1 / 255 - QMEAN) / QSTD)
    lower = torch.special.ndtr((LEVELS - 1 / 255 - QMEAN) / QSTD)
    p = upper - lower
    p[0], p[-1] = upper[0], 1 - lower[-1]
    return p


def entropy_bits() -> float:
    """H = −Σ_k P_k·log2 P_k, bits per pixel: no model of the 8-bit data does better."""
    p = bin_probabilities()
    return float(-(p * p.log2()).sum())


class ExactPixels(nn.Module):
    """The exact ε of N(QMEAN, QSTD²) pixels as a "network" (one unused parameter: the API
    reads the device from the network's parameters)."""

    def __init__(self, schedule):
        super().__init__()
        self.eps = GaussianEps(schedule, QMEAN, QSTD)
        self.unused = nn.Parameter(torch.zeros(()))

    def forward(self, x, t, label=None):
        return self.eps(x, t)
