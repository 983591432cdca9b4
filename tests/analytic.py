"""Exact denoisers for Gaussian data, where the optimal predictor has a closed form."""

import torch
from torch import nn

from ddpmkit._tensor import extract
from ddpmkit.schedules import NoiseSchedule


class GaussianEps(nn.Module):
    """E[ε | x_t] for data x_0 ~ N(mean, std² I): x_t ~ N(√ᾱ·mean, ᾱ·std² + 1 − ᾱ), so
    E[ε | x_t] = √(1−ᾱ)·(x_t − √ᾱ·mean) / (ᾱ·std² + 1 − ᾱ)."""

    def __init__(self, schedule: NoiseSchedule, mean: float, std: float):
        super().__init__()
        self.abar = schedule.alphas_cumprod.clone()  # float64
        self.mean, self.std = mean, std

    def forward(self, x, t, label=None):
        abar = extract(self.abar, t, x.double())
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
