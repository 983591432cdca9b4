"""Autoguidance's reduced-capacity guide trained beside the main network (TrainConfig.guide_width).

Karras et al. 2024 ("Guiding a diffusion model with a bad version of itself") guide a model by "a
smaller, less-trained version of the model itself". Here that guide is the main network's config
at the smaller width W (RunConfig.guide_config), trained in the main run's loop on the same
batches, t, ε and dropped labels (diffusion.DiffusionLoss adds its loss), until guide_step; its EMA
at that step is RUN/guide.safetensors, what `sample --autoguide auto` loads (build.load_guide).
What the Trainer does with it: its parameters are a second group of the one AdamW (its own moments,
the same learning-rate schedule), clipped on their own norm; its EMA, of the main one's kind
(EMA.of), is updated after every step it trains; a checkpoint keeps its live and EMA weights and
its EMA's state, so a run resumes exactly. Data-parallel, its own DDP wrapper (build.training_model)
averages its gradients over the ranks at every micro-batch (the main network's only at the last one).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from .. import build, checkpoint
from ..config import RunConfig
from ..ema import EMA
from ..errors import UserError
from ..nets.unet import count_parameters

GUIDE_MODEL = "guide-model.safetensors"  # a checkpoint's guide: its live weights
GUIDE_EMA = "guide-ema.safetensors"  # and its EMA weights


class NarrowGuide:
    """The narrow guide of `config` (train.guide_width > 0) on `device`: its run (`config`, the guide's
    RunConfig), its plain network `net` (what checkpoints hold), its EMA, and `train`, the main run's
    TrainConfig, which says when it trains (guide_trains: the batches of steps 0 .. guide_step − 1)."""

    def __init__(self, config: RunConfig, device: torch.device):
        self.config = config.guide_config()
        self.net = build.build_net(self.config).to(device)  # its initial weights drawn from the run's seed
        self.ema = EMA.of(self.net, config.train)
        self.train = config.train

    def update(self, step: int) -> None:
        """Its EMA after the optimiser step `step` (0-based), while it trains."""
        if self.train.guide_trains(step):
            self.ema.update(self.net)

    def describe(self, model: nn.Module) -> str:
        """One line on the guide, for the training report beside the main `model`'s."""
        share = count_parameters(self.net) / count_parameters(model)
        return (f"guide: {type(self.net).__name__} of width {self.config.width} with {count_parameters(self.net):,} parameters "
                f"({share:.0%} of the main network's), trained beside it to step {self.train.guide_step}, "
                "its EMA there kept as guide.safetensors (autoguidance, Karras et al. 2024)")

    # ---- checkpoints ----
    def state_dict(self) -> dict:
        return {"ema": self.ema.state_dict()}

    def files(self) -> dict[str, dict[str, torch.Tensor]]:
        """Its weight files in a checkpoint."""
        return {GUIDE_MODEL: self.net.state_dict(), GUIDE_EMA: self.ema.model.state_dict()}

    def load(self, found: Path, state: dict) -> None:
        """Its weights, EMA weights and EMA state from checkpoint `found` and its state.pt's `state`."""
        if "guide" not in state:
            raise UserError(f"{found} holds no narrow guide (the run was trained without --guide-width); resume it "
                            "with its own config.json")
        for module, name in ((self.net, GUIDE_MODEL), (self.ema.model, GUIDE_EMA)):
            checkpoint.load_matching(module, checkpoint.load_weights(found / name), found / name)
        self.ema.load_state_dict(state["guide"]["ema"])
