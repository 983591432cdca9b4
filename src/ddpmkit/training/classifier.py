"""The noise-aware classifier of classifier guidance (Dhariwal & Nichol 2021) trained on the one
training loop: `NoiseAwareLoss`, its objective (as guided-diffusion's classifier_train.py: each
image at a uniformly drawn t), `fit` (a Trainer of that objective) and `train` (the network
sized by the run's kind, fitted, measured on held-out images; classifier.py owns the rest:
settings, accuracy, RUN/classifier/).

Notation: x_0 an image in model space [-1, 1], y its label, t ~ U{0, ..., T−1},
x_t = q_sample(x_0, t, ε) = √ᾱ_t·x_0 + √(1−ᾱ_t)·ε, the loss −log p(y | x_t, t) (cross-entropy).

The Trainer writes a run directory (log.jsonl, checkpoints/, top-level weights), which a
classifier has no use for, while RUN/classifier/ is written whole in one step by
classifier.save. So the Trainer trains in a temporary folder beside RUN/classifier/ (removed
when training ends, failed or not), and only the weights leave it: RUN/classifier/ holds
nothing but its three files, and the run's own files are never touched.
"""

from __future__ import annotations

import dataclasses
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .. import process
from ..classifier import ClassifierTraining, accuracy, measured_timesteps, training_and_measured
from ..config import RunConfig
from ..nets.classifier import NoisyClassifier
from ..rundir import CLASSIFIER
from ..schedules import NoiseSchedule
from .objective import Batch
from .trainer import Trainer


class NoiseAwareLoss:
    """The noise-aware classifier's objective (an objective.Objective): per image, drawn in this
    order for the micro-batch, t ~ U{0..T−1} and ε; the loss −log p(y | x_t, t) at
    x_t = q_sample(x_0, t, ε). It keeps no state of its own."""

    def __init__(self, net: NoisyClassifier, schedule: NoiseSchedule):
        self.net, self.schedule = net, schedule

    def losses(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        t = batch.randint(self.schedule.num_steps).to(batch.x0.device)  # [b]
        x_t = process.q_sample(self.schedule, batch.x0, t, batch.randn())  # [b, C, H, W]
        return F.cross_entropy(self.net(x_t, t), batch.labels.to(batch.x0.device), reduction="none"), t

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass

    def files(self) -> dict[str, dict[str, torch.Tensor]]:
        return {}


def loop_config(config: RunConfig, settings: ClassifierTraining) -> RunConfig:
    """What the classifier's Trainer runs: the settings' steps, batch, AdamW, warm-up and decay,
    seed (batch order, t and ε); no clipping, one process in fp32, one checkpoint at the end,
    a log record every tenth of the steps (the last one's mean loss is `fit`'s)."""
    train = dataclasses.replace(
        config.train, steps=settings.steps, epochs=None, batch_size=settings.batch_size, lr=settings.lr,
        weight_decay=settings.weight_decay, warmup_steps=settings.warmup_steps, lr_decay=settings.lr_decay, grad_clip=0.0,
        grad_accum=1, num_workers=0, log_every=max(1, settings.steps // 10), sample_every=0, checkpoint_every=0, keep=1,
        precision="fp32", compile=False, loggers=(), eval_every=0, posthoc_ema=(), posthoc_every=0, guide_at=0.0, guide_width=0)
    return dataclasses.replace(config, seed=settings.seed, train=train)


def fit(net: NoisyClassifier, schedule: NoiseSchedule, dataset, kind, config: RunConfig, settings: ClassifierTraining,
        device: torch.device, beside: Path, report=lambda message: None) -> float:
    """Train `net` on the labelled `dataset` (uint8 images, labels ≥ 0; `kind` turns them into
    model space) by NoiseAwareLoss on the Trainer, in a temporary folder in `beside` that is
    removed at the end. The optimiser is torch's AdamW unfused, as the classifier's own loop had
    it, so that the weights are those it gave. Returns the mean loss of the last tenth of the steps."""
    every = 2 * max(1, settings.steps // 10)  # a line every fifth of the steps, each the mean of the last tenth
    with tempfile.TemporaryDirectory(prefix=f".{CLASSIFIER}.training-", dir=beside) as work, \
            torch.random.fork_rng(devices=[]):  # the Trainer seeds the global RNG (dropout); the caller's is kept
        trainer = Trainer(
            loop_config(config, settings), net, NoiseAwareLoss(net, schedule.to(device)), dataset, Path(work),
            modality=kind, device=device, progress=False,
            optimizer=lambda params: torch.optim.AdamW(params, lr=settings.lr, weight_decay=settings.weight_decay))

        def say(step: int) -> None:
            if step % every == 0 or step == settings.steps:
                report(f"step {step}/{settings.steps}: cross-entropy {trainer.interval.last_loss:.3f}")

        trainer.on_step = say
        result = trainer.fit()
        trainer.close()
    net.eval()
    return result.final_loss


def train(config: RunConfig, kind, settings: ClassifierTraining = ClassifierTraining(), net_options: dict | None = None,
          *, run_dir: Path, device: torch.device = torch.device("cpu"),
          report=lambda message: None) -> tuple[NoisyClassifier, dict, dict]:
    """Train the noise-aware classifier of the run in `run_dir` (`config`, its `kind`): the
    network sized by the kind (`kind.fit_classifier`; `net_options` override its fields),
    trained by `fit` and measured by classifier.accuracy. Returns (the network, its config.json
    content, the accuracy record), for classifier.save."""
    net_config = kind.fit_classifier(config, net_options or {})
    schedule = NoiseSchedule.from_config(config.diffusion)  # the run's own, --beta-start/--beta-end included
    train_set, measured, what = training_and_measured(kind, settings.holdout, report)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(settings.seed)
        net = NoisyClassifier(net_config).to(device)
    report(f"classifier: {sum(p.numel() for p in net.parameters()):,} parameters, {len(train_set):,} training images, "
           f"{settings.steps} steps of {settings.batch_size}; device: {device}")
    started = time.perf_counter()
    loss = fit(net, schedule, train_set, kind, config, settings, device, Path(run_dir), report)
    seconds = time.perf_counter() - started
    images, labels = measured.batch(range(len(measured)))
    rows = accuracy(net, schedule, kind.to_model_space(images), labels, measured_timesteps(schedule.num_steps),
                    seed=settings.seed)
    counts = np.bincount(labels.numpy(), minlength=net_config.num_classes)
    record = {"measured_on": what, "num_images": len(measured), "classes": net_config.num_classes,
              "chance": float(counts.max() / counts.sum()), "accuracy": rows, "final_loss": loss,
              "train_seconds": round(seconds, 1)}
    d = config.diffusion
    saved = {"net": net_config.to_dict(), "training": asdict(settings), "schedule": d.schedule, "num_steps": d.num_steps,
             "beta_start": d.beta_start, "beta_end": d.beta_end, "data": config.data.name}
    return net, saved, record
