"""Networks for 2-D (or any flat D-dim) toy data: x [B, D], t [B] -> [B, D]."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
import torch.nn.functional as F

from ..errors import UserError
from .embeddings import TimeEmbedding


def _check_positive(owner: str, **values: int) -> None:
    for name, value in values.items():
        if not isinstance(value, int) or value <= 0:
            raise UserError(f"{owner}.{name} must be a positive integer, got {value!r}")


class LabelEmbedding(nn.Module):
    """Class labels -> vectors; row `num_classes` is the learned null label (no class),
    used when `label` is None and for classifier-free guidance (Ho & Salimans 2021)."""

    def __init__(self, num_classes: int, dim: int):
        super().__init__()
        self.num_classes = num_classes
        self.table = nn.Embedding(num_classes + 1, dim)

    def forward(self, label: torch.Tensor | None, batch: int, device: torch.device) -> torch.Tensor:
        if label is None:
            label = torch.full((batch,), self.num_classes, device=device, dtype=torch.long)
        return self.table(label)


@dataclass(frozen=True)
class MLPConfig:
    """Residual MLP with a sinusoidal time embedding added before every block."""

    dim: int = 2  # data dimension D
    hidden: int = 128  # width of every hidden layer
    blocks: int = 3  # residual blocks (two linear layers each)
    time_dim: int = 64  # sinusoidal feature count before the time MLP
    num_classes: int = 0  # > 0: class-conditional, with a null label
    out_dim: int | None = None  # output width (None: dim; 2·dim with a learned variance)

    def __post_init__(self) -> None:
        _check_positive("MLPConfig", dim=self.dim, hidden=self.hidden, blocks=self.blocks, time_dim=self.time_dim)


class MLP(nn.Module):
    def __init__(self, config: MLPConfig):
        super().__init__()
        self.config = config
        h = config.hidden
        self.time = TimeEmbedding(config.time_dim, h)
        self.label = LabelEmbedding(config.num_classes, h) if config.num_classes else None
        self.inp = nn.Linear(config.dim, h)
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.LayerNorm(h), nn.Linear(h, h), nn.SiLU(), nn.Linear(h, h)) for _ in range(config.blocks)
        )
        self.out = nn.Linear(h, config.out_dim or config.dim)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: torch.Tensor, t: torch.Tensor, label: torch.Tensor | None = None) -> torch.Tensor:
        emb = self.time(t)  # [B, H]
        if self.label is not None:
            emb = emb + self.label(label, x.shape[0], x.device)
        h = self.inp(x)  # [B, H]
        for block in self.blocks:
            h = h + block(h + emb)
        return self.out(F.silu(h))


@dataclass(frozen=True)
class GatedMLPConfig:
    """The classic toy network: each linear layer's output is scaled elementwise by a
    learned per-timestep vector (an embedding table over t), then softplus."""

    dim: int = 2  # data dimension D
    hidden: int = 128  # width of every hidden layer
    layers: int = 3  # gated hidden layers
    num_steps: int = 1000  # T: the embedding tables have one row per timestep
    num_classes: int = 0  # > 0: class-conditional gates, with a null label
    out_dim: int | None = None  # output width (None: dim; 2·dim with a learned variance)

    def __post_init__(self) -> None:
        _check_positive("GatedMLPConfig", dim=self.dim, hidden=self.hidden, layers=self.layers, num_steps=self.num_steps)


class GatedLinear(nn.Module):
    """y = (W x + b) ⊙ γ_t: a linear layer gated by a learned embedding of t."""

    def __init__(self, d_in: int, d_out: int, num_steps: int):
        super().__init__()
        self.linear = nn.Linear(d_in, d_out)
        self.gate = nn.Embedding(num_steps, d_out)
        nn.init.uniform_(self.gate.weight)

    def forward(self, x: torch.Tensor, t: torch.Tensor, extra: torch.Tensor | None) -> torch.Tensor:
        gate = self.gate(t.long())
        if extra is not None:
            gate = gate + extra
        return self.linear(x) * gate


class GatedMLP(nn.Module):
    def __init__(self, config: GatedMLPConfig):
        super().__init__()
        self.config = config
        widths = [config.dim] + [config.hidden] * config.layers
        self.layers = nn.ModuleList(GatedLinear(a, b, config.num_steps) for a, b in zip(widths[:-1], widths[1:]))
        self.label = LabelEmbedding(config.num_classes, config.hidden) if config.num_classes else None
        self.out = nn.Linear(config.hidden, config.out_dim or config.dim)

    def forward(self, x: torch.Tensor, t: torch.Tensor, label: torch.Tensor | None = None) -> torch.Tensor:
        if t.is_floating_point() and not bool((t == t.round()).all()):
            raise ValueError("GatedMLP has one gate per integer timestep; it cannot take fractional t")
        extra = self.label(label, x.shape[0], x.device) if self.label is not None else None
        h = x
        for layer in self.layers:
            h = F.softplus(layer(h, t, extra))  # [B, H]
        return self.out(h)
