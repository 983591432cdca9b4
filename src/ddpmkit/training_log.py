"""The log.jsonl record of one log interval, summed step by step (the trainer's bookkeeping;
rundir.py writes the records)."""

from __future__ import annotations

import torch


class LogInterval:
    """Accumulates one log interval: loss overall and per quarter of the timestep range
    (improved-diffusion's loss_q0..q3), gradient norm, skipped steps (and, with fp16 loss
    scaling, the steps the scaler skipped and its scale)."""

    def __init__(self, track_overflow: bool = False) -> None:
        self.last_loss = float("nan")
        self.track_overflow = track_overflow
        self.reset()

    def reset(self) -> None:
        self.loss_sum, self.count, self.grad_sum, self.grad_count, self.skipped = 0.0, 0, 0.0, 0, 0
        self.q_sum, self.q_count = [0.0] * 4, [0] * 4
        self.steps, self.overflow = 0, 0

    _STATE = ("loss_sum", "count", "grad_sum", "grad_count", "skipped", "q_sum", "q_count", "steps", "overflow", "last_loss")

    def state_dict(self) -> dict:
        """The running sums of the unfinished record (plain numbers) and the last logged loss."""
        return {name: getattr(self, name) for name in self._STATE}

    def load_state_dict(self, state: dict) -> None:
        self.reset()
        for name in self._STATE:
            if name in state:
                setattr(self, name, list(state[name]) if name in ("q_sum", "q_count") else state[name])

    def add(self, losses: torch.Tensor, t: torch.Tensor, T: int, grad_norm: float, finite: bool, overflow: bool = False) -> None:
        self.steps += 1
        if overflow:
            self.overflow += 1
            return
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

    def record(self, step: int, lr: float, elapsed: float) -> dict:
        """The interval's log.jsonl record; the sums start afresh."""
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
        if self.track_overflow:
            record["overflow"] = self.overflow
        if record["loss"] is not None:
            self.last_loss = record["loss"]
        self.reset()
        return record


def quality_text(record: dict) -> str:
    """A quality measurement of log.jsonl in a few characters: 'FD 0.123 (1000 × dpm++sde 20 steps)'."""
    names = {"frechet_distance": "FD", "mmd": "MMD²"}
    s = record["samples"]
    value = record["quality"][record["metric"]]
    return f"{names.get(record['metric'], record['metric'])} {value:.4g} ({s['num']} × {s['sampler']} {s['steps']} steps)"
