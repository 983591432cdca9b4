"""Exponential moving average of a network's weights (Polyak averaging, as used by
Ho et al. 2020 with decay 0.9999), with a fixed decay or the power-function profile of
Karras et al. 2024 (EDM2, Sec. 3.1), whose width is a fixed share of the training length."""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING

import torch
from torch import nn

from .posthoc_ema import power_beta, sigma_rel_to_gamma

if TYPE_CHECKING:
    from .config import TrainConfig


class EMA:
    """Keeps `model`, a frozen copy of a network whose weights trail the live ones.

    decay: the target decay per update, in [0, 1).
    warmup: if True the decay ramps as min(decay, (1 + n) / (10 + n)) over the first
    updates n, so early averages are not dominated by the random initialisation.
    sigma_rel: if > 0, `decay` and `warmup` are not used: update t = 1, 2, ... decays by
    β_t = (1 − 1/t)^(γ+1) (posthoc_ema.power_beta), so that after t updates the average
    weights step τ by the power function p(τ) ∝ τ^γ, whose width is σ_rel × t.
    """

    def __init__(self, net: nn.Module, decay: float = 0.999, warmup: bool = True, sigma_rel: float = 0.0):
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must lie in [0, 1), got {decay}")
        self.decay = decay
        self.warmup = warmup
        self._set_sigma_rel(sigma_rel)
        self.num_updates = 0
        self.model = copy.deepcopy(net).eval().requires_grad_(False)

    @classmethod
    def of(cls, net: nn.Module, train: TrainConfig) -> EMA:
        """The EMA a run's training config asks for (--ema-decay, its warm-up, --ema-sigma-rel):
        the one place Trainer and Distiller build theirs from."""
        return cls(net, train.ema_decay, train.ema_warmup, train.ema_sigma_rel)

    def _set_sigma_rel(self, sigma_rel: float) -> None:
        """sigma_rel and its γ, solved once here rather than at every update."""
        self.sigma_rel = sigma_rel
        self.gamma = sigma_rel_to_gamma(sigma_rel) if sigma_rel > 0 else None

    def current_decay(self) -> float:
        if self.gamma is not None:
            return power_beta(self.num_updates + 1, self.gamma)
        if not self.warmup:
            return self.decay
        return min(self.decay, (1 + self.num_updates) / (10 + self.num_updates))

    @torch.no_grad()
    def update(self, net: nn.Module) -> None:
        decay = self.current_decay()
        ema_params = list(self.model.parameters())
        live_params = list(net.parameters())
        torch._foreach_lerp_(ema_params, live_params, 1.0 - decay)
        for ema_buf, buf in zip(self.model.buffers(), net.buffers()):
            ema_buf.copy_(buf)
        self.num_updates += 1

    def state_dict(self) -> dict:
        return {"decay": self.decay, "warmup": self.warmup, "sigma_rel": self.sigma_rel, "num_updates": self.num_updates}

    def load_state_dict(self, state: dict) -> None:
        self.decay = float(state["decay"])
        self.warmup = bool(state["warmup"])
        self._set_sigma_rel(float(state.get("sigma_rel", 0.0)))  # checkpoints from before the power profile have none
        self.num_updates = int(state["num_updates"])
