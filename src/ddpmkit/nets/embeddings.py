"""Time and class-label embeddings shared by every network."""

from __future__ import annotations

import math

import torch
from torch import nn


def sinusoidal_embedding(t: torch.Tensor, dim: int, max_period: float = 10_000.0) -> torch.Tensor:
    """Transformer-style sinusoidal features of (possibly fractional) timesteps.

    t: [B] timesteps (integers or floats); returns [B, dim] as float32
    (Vaswani et al. 2017, used for diffusion time by Ho et al. 2020).
    """
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = t.float()[:, None] * freqs[None, :]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
    return emb


class TimeEmbedding(nn.Module):
    """Sinusoidal features followed by a two-layer MLP: t [B] -> [B, out_dim]."""

    def __init__(self, freq_dim: int, out_dim: int):
        super().__init__()
        self.freq_dim = freq_dim  # width of the sinusoidal features
        self.mlp = nn.Sequential(nn.Linear(freq_dim, out_dim), nn.SiLU(), nn.Linear(out_dim, out_dim))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return self.mlp(sinusoidal_embedding(t, self.freq_dim))


class LabelEmbedding(nn.Embedding):
    """Class labels [B] -> vectors [B, dim]. Row `num_classes` is the learned null label
    ("no class"): what `label=None` means, and the unconditional half of classifier-free
    guidance (Ho & Salimans 2021). An nn.Embedding of num_classes + 1 rows, so its weight
    is saved as `<name>.weight`."""

    def __init__(self, num_classes: int, dim: int):
        super().__init__(num_classes + 1, dim)
        self.num_classes = num_classes

    def forward(self, label: torch.Tensor | None, batch: int, device: torch.device) -> torch.Tensor:
        if label is None:
            label = torch.full((batch,), self.num_classes, device=device, dtype=torch.long)
        return super().forward(label)
