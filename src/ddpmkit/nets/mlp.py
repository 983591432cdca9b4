"""Networks for 2-D (or any flat D-dim) toy data: x [B, D], t [B] -> [B, D]."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
import torch.nn.functional as F

from ..errors import check_positive
from .embeddings import LabelEmbedding, TimeEmbedding


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
        for name in ("dim", "hidden", "blocks", "time_dim"):
            check_positive(f"MLPConfig.{name}", getattr(self, name))


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
        for name in ("dim", "hidden", "layers", "num_steps"):
            check_positive(f"GatedMLPConfig.{name}", getattr(self, name))


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
