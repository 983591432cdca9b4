"""One training loop for every network and data set (Algorithm 1 of Ho et al. 2020,
with the engineering around it: AdamW, LR warm-up and decay, gradient clipping,
EMA, gradient accumulation, non-finite guards, logs and atomic checkpoints).

The trainer takes built objects; build.py makes them from a RunConfig.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from tqdm.auto import tqdm

from . import checkpoint
from ._tensor import randn_like
from .config import RunConfig, TrainConfig
from .data import batches
from .denoiser import Denoiser
from .ema import EMA
from .losses import sample_timesteps, training_losses
from .schedules import NoiseSchedule


class TrainingDiverged(RuntimeError):
    """Too many consecutive steps had a non-finite loss or gradient."""


@dataclass
class TrainResult:
    steps: int  # optimiser steps completed
    seconds: float  # wall time of this call
    final_loss: float  # mean loss of the last log interval
    nonfinite: int  # steps skipped for a non-finite loss or gradient


def lr_factor(step: int, train: TrainConfig) -> float:
    """Multiplier of the peak LR at optimiser step `step`: linear warm-up, then constant
    or cosine decay to 0 at the last step (Loshchilov & Hutter 2017)."""
    if train.warmup_steps and step < train.warmup_steps:
        return (step + 1) / train.warmup_steps
    if train.lr_decay == "constant":
        return 1.0
    progress = (step - train.warmup_steps) / max(1, train.steps - train.warmup_steps)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


class Trainer:
    """Train `net` on `dataset` as `config` says, writing into `run_dir`.

    prepare: turns a raw batch (uint8 images or float points) into model-space floats
    on the device; augment: optional (x, generator) -> x applied to each micro-batch.
    on_sample: called as on_sample(step, ema_net) every `sample_every` steps (the caller
    draws the final pictures).
    report: where one-line messages go (the CLI passes print).
    """

    def __init__(
        self,
        config: RunConfig,
        net: nn.Module,
        dataset: torch.utils.data.Dataset,
        run_dir: Path,
        *,
        device: torch.device,
        prepare: Callable[[torch.Tensor], torch.Tensor],
        augment: Callable[[torch.Tensor, torch.Generator], torch.Tensor] | None = None,
        on_sample: Callable[[int, nn.Module], None] | None = None,
        report: Callable[[str], None] = lambda message: None,
        progress: bool = True,
    ):
        self.config, self.train = config, config.train
        self.run_dir = Path(run_dir)
        self.device = device
        self.dataset, self.prepare, self.augment = dataset, prepare, augment
        self.on_sample, self.report, self.progress = on_sample, report, progress
        self.num_classes = config.num_classes  # 0: unconditional

        torch.manual_seed(config.seed)  # dropout and anything else on the global RNG
        self.net = net.to(device)
        self.denoiser = Denoiser(
            self.net,
            NoiseSchedule.from_name(config.diffusion.schedule, config.diffusion.num_steps),
            config.diffusion.prediction, config.diffusion.variance)
        self.ema = EMA(self.net, self.train.ema_decay, self.train.ema_warmup)
        self.optimizer = torch.optim.AdamW(self.net.parameters(), lr=self.train.lr, weight_decay=self.train.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda s: lr_factor(s, self.train))
        self.generator = torch.Generator().manual_seed(config.seed)  # t, ε and augmentation
        self.step = 0  # optimiser steps completed
        self.nonfinite_total = 0

    # ---- state ---------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {
            "step": self.step,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "ema": self.ema.state_dict(),
            "generator": self.generator.get_state(),
            "torch_rng": torch.get_rng_state(),
            "nonfinite_total": self.nonfinite_total,
        }

    def save(self) -> Path:
        return checkpoint.save_checkpoint(
            self.run_dir, self.step, self.net.state_dict(), self.ema.model.state_dict(), self.state_dict(), self.train.keep
        )

    def resume(self) -> int:
        """Load the newest complete checkpoint of run_dir; returns its step."""
        found = checkpoint.newest_checkpoint(self.run_dir)
        if found is None:
            raise FileNotFoundError(f"{self.run_dir} has no complete checkpoint to resume from")
        self.net.load_state_dict(checkpoint.load_weights(found / "model.safetensors"))
        self.ema.model.load_state_dict(checkpoint.load_weights(found / "ema.safetensors"))
        state = checkpoint.load_state(found / "state.pt")
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.ema.load_state_dict(state["ema"])
        self.generator.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        self.step = int(state["step"])
        self.nonfinite_total = int(state["nonfinite_total"])
        _truncate_log(self.run_dir / "log.jsonl", self.step)
        return self.step

    # ---- the loop --------------------------------------------------------------------
    def fit(self) -> TrainResult:
        train, T = self.train, self.config.diffusion.num_steps
        micro = train.batch_size // train.grad_accum
        stream = batches(self.dataset, micro, self.config.seed, self.step * train.grad_accum, train.num_workers)
        log_path = self.run_dir / "log.jsonl"
        interval = _Interval()
        consecutive_bad = 0
        start = time.perf_counter()
        bar = tqdm(total=train.steps, initial=self.step, disable=not self.progress, unit="step", dynamic_ncols=True)
        self.net.train()
        while self.step < train.steps:
            self.optimizer.zero_grad(set_to_none=True)
            step_losses, step_t = [], []
            for _ in range(train.grad_accum):
                raw, labels = next(stream)
                x0 = self.prepare(raw)  # [B, ...] model space on the device
                if self.augment is not None:
                    x0 = self.augment(x0, self.generator)
                label = self._drop_labels(labels).to(self.device) if self.num_classes else None
                t = sample_timesteps(x0.shape[0], T, self.generator).to(self.device)
                noise = randn_like(x0, self.generator)
                per_sample = training_losses(  # [B]
                    self.denoiser, x0, t, noise, self.config.diffusion.loss, label,
                    self.config.diffusion.min_snr_gamma, discrete=not self.config.is_toy,
                )
                (per_sample.mean() / train.grad_accum).backward()
                step_losses.append(per_sample.detach())
                step_t.append(t)
            losses, ts = torch.cat(step_losses), torch.cat(step_t)
            grad_norm = torch.nn.utils.clip_grad_norm_(self.net.parameters(), train.grad_clip or float("inf"))
            finite = bool(torch.isfinite(losses).all()) and bool(torch.isfinite(grad_norm))
            if finite:
                self.optimizer.step()
                self.ema.update(self.net)
                consecutive_bad = 0
            else:
                self.optimizer.zero_grad(set_to_none=True)
                self.nonfinite_total += 1
                consecutive_bad += 1
            lr = self.optimizer.param_groups[0]["lr"]
            self.scheduler.step()
            self.step += 1
            interval.add(losses, ts, T, float(grad_norm), finite)
            if consecutive_bad >= train.max_nonfinite:
                interval.write(log_path, self.step, lr, time.perf_counter() - start)
                bar.close()
                last = checkpoint.newest_checkpoint(self.run_dir)
                kept = f"the last good checkpoint ({last}) is untouched" if last else "no checkpoint was written"
                raise TrainingDiverged(
                    f"training stopped at step {self.step}: {consecutive_bad} steps in a row had a non-finite "
                    f"loss or gradient; {kept}. lower --lr or --grad-clip and continue with --resume"
                )
            bar.update(1)
            if self.step % train.log_every == 0 or self.step == train.steps:
                record = interval.write(log_path, self.step, lr, time.perf_counter() - start)
                if record["loss"] is not None:
                    bar.set_postfix(loss=f"{record['loss']:.4f}")
            if train.checkpoint_every and self.step % train.checkpoint_every == 0 and self.step < train.steps:
                self.save()
            if train.sample_every and self.step % train.sample_every == 0 and self.step < train.steps:
                self._sample()
        bar.close()
        self.save()
        return TrainResult(self.step, time.perf_counter() - start, interval.last_loss, self.nonfinite_total)

    def _drop_labels(self, labels: torch.Tensor) -> torch.Tensor:
        """Replace each label by the null label with probability p_uncond, so one network
        learns ε(x, c) and ε(x, ∅) (Sec. 3.2 of Ho & Salimans 2021)."""
        drop = torch.rand(labels.shape[0], generator=self.generator) < self.train.p_uncond
        return torch.where(drop, torch.full_like(labels, self.num_classes), labels)

    def _sample(self) -> None:
        if self.on_sample is not None:
            self.on_sample(self.step, self.ema.model)


class _Interval:
    """Accumulates one log interval: loss overall and per quarter of the timestep range
    (improved-diffusion's loss_q0..q3), gradient norm, skipped steps."""

    def __init__(self) -> None:
        self.last_loss = float("nan")
        self.reset()

    def reset(self) -> None:
        self.loss_sum, self.count, self.grad_sum, self.grad_count, self.skipped = 0.0, 0, 0.0, 0, 0
        self.q_sum, self.q_count = [0.0] * 4, [0] * 4
        self.steps = 0

    def add(self, losses: torch.Tensor, t: torch.Tensor, T: int, grad_norm: float, finite: bool) -> None:
        self.steps += 1
        if not finite:
            self.skipped += 1
            return
        self.loss_sum += float(losses.sum())
        self.count += len(losses)
        self.grad_sum += grad_norm
        self.grad_count += 1
        quarter = (t * 4 // T).clamp(max=3).cpu()
        losses = losses.cpu()
        for q in range(4):
            sel = losses[quarter == q]
            self.q_sum[q] += float(sel.sum())
            self.q_count[q] += len(sel)

    def write(self, path: Path, step: int, lr: float, elapsed: float) -> dict:
        mean = lambda s, n: s / n if n else None  # noqa: E731
        record = {
            "step": step,
            "loss": mean(self.loss_sum, self.count),
            **{f"loss_q{q}": mean(self.q_sum[q], self.q_count[q]) for q in range(4)},
            "grad_norm": mean(self.grad_sum, self.grad_count),
            "lr": lr,
            "nonfinite": self.skipped,
            "elapsed_s": round(elapsed, 3),
        }
        if record["loss"] is not None:
            self.last_loss = record["loss"]
        with open(path, "a") as f:
            f.write(json.dumps(record) + "\n")
        self.reset()
        return record


def _truncate_log(path: Path, step: int) -> None:
    """Drop log records after `step` (written after the checkpoint a resume starts from)."""
    if not path.is_file():
        return
    lines = [ln for ln in path.read_text().splitlines() if ln.strip() and json.loads(ln)["step"] <= step]
    checkpoint.atomic_write_text(path, "".join(ln + "\n" for ln in lines))


def read_log(path: Path) -> list[dict]:
    return [json.loads(ln) for ln in Path(path).read_text().splitlines() if ln.strip()]

