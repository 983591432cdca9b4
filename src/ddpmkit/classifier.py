"""The noise-aware classifier of a run, for classifier guidance (Dhariwal & Nichol 2021): how it
is trained (`ClassifierTraining`; training/classifier.py trains it on the one training loop, on
the run's labelled training images at uniformly drawn t, as guided-diffusion's
classifier_train.py does); its accuracy on held-out images at several t; RUN/classifier/
written and read back.

Notation: x_0 an image in model space [-1, 1], y its label, t ~ U{0, ..., T−1},
x_t = q_sample(x_0, t, ε) = √ᾱ_t·x_0 + √(1−ᾱ_t)·ε, the loss −log p(y | x_t, t) (cross-entropy).

RUN/classifier/ holds config.json (the network's ClassifierConfig, the training settings,
the schedule it was trained for), classifier.safetensors and accuracy.json; checkpoint.py
writes the folder whole (`save_classifier`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from . import checkpoint, process
from ._tensor import randn_like
from .config import RunConfig
from .data import holdout_split
from .errors import UserError, check_between, check_not_negative, check_positive
from .nets.classifier import ClassifierConfig, NoisyClassifier
from .rundir import CLASSIFIER
from .schedules import NoiseSchedule

CONFIG_FILE, WEIGHTS_FILE, ACCURACY_FILE = "config.json", "classifier.safetensors", "accuracy.json"


@dataclass(frozen=True)
class ClassifierTraining:
    """How `ddpmkit train-classifier` trains (defaults: about a minute for the digits on a CPU)."""

    steps: int = 1000  # optimiser steps
    batch_size: int = 128  # images per step, each at its own uniformly drawn t
    lr: float = 5e-3  # peak AdamW learning rate, cosine decay to 0 (1e-3 learns 3x slower on the digits)
    warmup_steps: int = 50  # linear warm-up of the learning rate
    weight_decay: float = 0.05  # AdamW's decoupled weight decay
    seed: int = 0  # initial weights, batch order, t and ε
    holdout: float = 0.1  # share of the training images the accuracy is measured on when the run held none out
    lr_decay: str = "cosine"  # what config.lr_factor reads: cosine decay after the warm-up

    def __post_init__(self):
        check_positive("--steps", self.steps)
        check_positive("--batch-size", self.batch_size)
        check_positive("--lr", self.lr, integer=False)
        check_not_negative("--weight-decay", self.weight_decay)
        if not isinstance(self.warmup_steps, int) or self.warmup_steps < 0:
            raise UserError(f"--warmup-steps must be 0 or more, got {self.warmup_steps!r}")
        check_between("--holdout", self.holdout, 0, 1, high_included=False, what="the share of images kept out of training")


def measured_timesteps(T: int) -> list[int]:
    """Where the accuracy is measured: t = 0, T/4, T/2 and 3T/4."""
    return sorted({0, T // 4, T // 2, 3 * T // 4})


def training_and_measured(modality, classifier_holdout: float, report=lambda message: None):
    """(the images to train on, the images to measure on, what the latter are): the run's
    training and held-out images when it held some out (`--holdout` of train), else the
    training images split by `classifier_holdout` (a fixed seeded split)."""
    train, _ = modality.load(0, report)
    heldout = modality.load_heldout()
    if heldout is not None and len(heldout):
        return train, heldout, f"the run's {len(heldout)} held-out images (never trained on by the run or the classifier)"
    if classifier_holdout <= 0:
        return train, train, f"the {len(train)} training images (the run held none out and --holdout is 0)"
    keep, held = holdout_split(len(train), classifier_holdout)
    return (train.subset(keep), train.subset(held),
            f"{len(held)} training images of the run kept out of the classifier's training (the run held none out)")


@torch.no_grad()
def accuracy(net: NoisyClassifier, schedule: NoiseSchedule, x0: torch.Tensor, labels: torch.Tensor, timesteps: list[int],
             seed: int = 0, batch_size: int = 1000) -> list[dict]:
    """The share of x_t = q_sample(x_0, t, ε) classified as their label, at each t of
    `timesteps` (ε seeded by `seed`), with ᾱ_t beside it."""
    device = next(net.parameters()).device
    schedule = schedule.to(device)
    rows = []
    for t in timesteps:
        generator = torch.Generator().manual_seed(seed)
        right = 0
        for start in range(0, len(x0), batch_size):
            x = x0[start:start + batch_size].to(device)
            t_batch = torch.full((len(x),), t, dtype=torch.long, device=device)
            x_t = process.q_sample(schedule, x, t_batch, randn_like(x, generator))
            right += int((net(x_t, t_batch).argmax(1).cpu() == labels[start:start + batch_size]).sum())
        rows.append({"t": t, "alpha_bar": float(schedule.alphas_cumprod[t]), "accuracy": right / len(x0)})
    return rows


def format_accuracy(record: dict) -> list[str]:
    """The table `train-classifier` prints: accuracy at each t beside chance."""
    lines = [f"accuracy on {record['measured_on']} (chance: {record['chance']:.3f}, the most frequent class):",
             f"  {'t':>5}  {'ᾱ_t':>7}  accuracy"]
    lines += [f"  {r['t']:>5}  {r['alpha_bar']:>7.4f}  {r['accuracy']:.3f}" for r in record["accuracy"]]
    return lines


def folder(run_dir: Path) -> Path:
    return Path(run_dir) / CLASSIFIER


def save(run_dir: Path, net: NoisyClassifier, saved: dict, record: dict) -> Path:
    """RUN/classifier/ written whole (checkpoint.save_classifier): config.json, the weights, accuracy.json."""
    files = {CONFIG_FILE: json.dumps(saved, indent=2), ACCURACY_FILE: json.dumps(record, indent=2)}
    return checkpoint.save_classifier(folder(run_dir), {WEIGHTS_FILE: net.state_dict()}, files)


def load(run_dir: Path, config: RunConfig, device: torch.device | None = None, *,
         missing: str = "classifier guidance needs the run's classifier") -> NoisyClassifier:
    """The run's classifier in eval mode without parameter gradients (the gradient classifier
    guidance takes is the input's); a clear error when the run has none (`missing` begins
    it) or it was trained for another schedule."""
    where = folder(run_dir)
    if not (where / CONFIG_FILE).is_file():
        raise UserError(f"{missing}: {where} does not exist; train one with `ddpmkit train-classifier --run {run_dir}` "
                        "(then sample with --class K --classifier-scale S)")
    saved = json.loads((where / CONFIG_FILE).read_text())
    d = config.diffusion
    trained_for = (saved.get("schedule"), saved.get("num_steps"), saved.get("beta_start"), saved.get("beta_end"))
    if trained_for != (d.schedule, d.num_steps, d.beta_start, d.beta_end):
        raise UserError(f"{where} was trained for the {trained_for[0]} schedule with T = {trained_for[1]} and β ends "
                        f"{_ends(*trained_for[2:])}; the run has {d.schedule} with T = {d.num_steps} and β ends "
                        f"{_ends(d.beta_start, d.beta_end)}; train it again with `ddpmkit train-classifier --run {run_dir}`")
    net = NoisyClassifier(ClassifierConfig.from_dict(saved["net"]))
    if config.num_classes and net.num_classes != config.num_classes:
        raise UserError(f"{where} tells {net.num_classes} classes apart, the run is conditioned on {config.num_classes}; "
                        f"train it again with `ddpmkit train-classifier --run {run_dir}`")
    checkpoint.load_matching(net, checkpoint.load_weights(where / WEIGHTS_FILE), where / WEIGHTS_FILE)
    return net.to(device or torch.device("cpu")).eval().requires_grad_(False)


def _ends(start, end) -> str:
    """β ends as a message says them (None: the schedule's default)."""
    return "default" if start is None and end is None else f"{start}..{end}"


def read_accuracy(run_dir: Path) -> dict:
    """RUN/classifier/accuracy.json."""
    return json.loads((folder(run_dir) / ACCURACY_FILE).read_text())
