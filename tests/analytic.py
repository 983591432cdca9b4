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
