"""What the Trainer optimises: an Objective turns one micro-batch into per-example losses.

The Trainer owns everything around the loss (optimiser, learning-rate schedule, gradient
clipping and accumulation, precision, data parallelism, EMA, the non-finite guard,
checkpoints and exact resume, logs and loggers, the progress bar); the objective owns the
loss and the randomness it draws. Three objectives exist: `diffusion.DiffusionLoss`
(Algorithm 1 of Ho et al. 2020), `distill.DistillRound` (Algorithm 2 of Salimans & Ho 2022) and
`classifier.NoiseAwareLoss` (the noise-aware classifier of Dhariwal & Nichol 2021).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch


@dataclass(frozen=True)
class Batch:
    """This rank's rows of one global micro-batch, and how to draw randomness for all of them.

    Randomness (t, ε, label dropout) is drawn for the whole global micro-batch of `size` rows
    from the generator every rank shares, and each rank keeps `rows`: N processes draw exactly
    what one process would (see trainer.py)."""

    x0: torch.Tensor  # [b, ...] this rank's examples in model space, on the device
    labels: torch.Tensor  # [b] their class labels on the CPU (-1: unlabelled)
    size: int  # n, the global micro-batch (b = n / processes)
    rows: slice  # this rank's rows of the n
    generator: torch.Generator  # the shared generator (CPU)
    step: int = 0  # the optimiser step it trains, 0-based (the narrow guide trains until TrainConfig.guide_step)

    def randint(self, high: int) -> torch.Tensor:
        """[b] integers in [0, high), drawn for all n rows, on the CPU."""
        return torch.randint(0, high, (self.size,), generator=self.generator)[self.rows]

    def randn(self) -> torch.Tensor:
        """[b, ...] standard normal noise shaped like x0, drawn for all n rows, on x0's device."""
        noise = torch.randn((self.size, *self.x0.shape[1:]), generator=self.generator, dtype=self.x0.dtype)
        return noise[self.rows].to(self.x0.device)

    def drop_labels(self, num_classes: int, p: float) -> torch.Tensor:
        """The labels, each replaced by the null label `num_classes` with probability p, so one
        network learns ε(x, c) and ε(x, ∅) (Sec. 3.2 of Ho & Salimans 2021); on x0's device."""
        drop = (torch.rand(self.size, generator=self.generator) < p)[self.rows]
        return torch.where(drop, torch.full_like(self.labels, num_classes), self.labels).to(self.x0.device)


class Objective(Protocol):
    """A training objective the Trainer runs. Its state travels in the checkpoint's state.pt
    (`state_dict`, plain data) and, for networks it holds besides the trained one (a
    distillation's teacher), in extra weight files of the checkpoint (`files`)."""

    def losses(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-example losses [b] (the Trainer averages and differentiates them) and each
        example's timestep [b] (for the log's loss per quarter of the timesteps). A network
        trained beside the Trainer's (the narrow guide) adds its losses g as g − g.detach():
        nothing to the value the log records, its gradient to the backward pass."""

    def state_dict(self) -> dict:
        """What a checkpoint keeps of the objective ({} when nothing)."""

    def load_state_dict(self, state: dict) -> None:
        """Restore what state_dict gave."""

    def files(self) -> dict[str, dict[str, torch.Tensor]]:
        """Extra weight files of a checkpoint: file name -> state_dict ({} when none)."""


class TrainingDiverged(RuntimeError):
    """Too many consecutive steps had a non-finite loss or gradient."""


class ReplicasDiverged(RuntimeError):
    """The data-parallel processes no longer hold the same weights (a bug, never expected)."""


class Augmentation(Protocol):
    """A random augmentation in two parts, so that its randomness can be drawn for the
    whole global batch and each rank apply its own rows."""

    def draw(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """Random parameters of n examples, [n, ...]."""

    def __call__(self, x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        """x [b, ...] augmented with its rows of the parameters, [b, ...]."""


@dataclass
class TrainResult:
    steps: int  # optimiser steps completed, in all (a resumed run counts the steps before it)
    seconds: float  # wall time of this call
    final_loss: float  # mean loss of the last log interval
    nonfinite: int  # steps skipped for a non-finite loss or gradient
    best: dict | None = None  # the best quality measurement so far (--eval-every): its log.jsonl record
    first_step: int = 0  # the step this call started from (a resumed run's checkpoint)
    pictures: tuple[str, ...] = ()  # the end-of-run pictures written into the run directory (file names, in order)

    @property
    def trained(self) -> int:
        """Optimiser steps this call took."""
        return self.steps - self.first_step
