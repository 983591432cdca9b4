"""Exponential moving average of a network's weights (Polyak averaging, as used by
Ho et al. 2020 with decay 0.9999)."""

from __future__ import annotations

import copy

import torch
from torch import nn


class EMA:
    """Keeps `model`, a frozen copy of a network whose weights trail the live ones.

    decay: the target decay per update, in [0, 1).
    warmup: if True the decay ramps as min(decay, (1 + n) / (10 + n)) over the first
    updates n, so early averages are not dominated by the random initialisation.
    """

    def __init__(self, net: nn.Module, decay: float = 0.999, warmup: bool = True):
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must lie in [0, 1), got {decay}")
        self.decay = decay
        self.warmup = warmup
        self.num_updates = 0
        self.model = copy.deepcopy(net).eval().requires_grad_(False)

    def current_decay(self) -> float:
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
        return {"decay": self.decay, "warmup": self.warmup, "num_updates": self.num_updates}

    def load_state_dict(self, state: dict) -> None:
        self.decay = float(state["decay"])
        self.warmup = bool(state["warmup"])
        self.num_updates = int(state["num_updates"])
