"""Sample quality measured during training (--eval-every): samples from the EMA weights with
SDE-DPM-Solver++(2M) at 20 steps, scored by the run's own measure (its modality's
training_measure), as one log.jsonl record with the sample count and sampler beside the numbers."""

from __future__ import annotations

import time

from ..sampling import Run, SampleSettings, draw_recorded

SAMPLER, STEPS = "dpm++sde", 20  # as good at 20 steps as DDPM at 1,000 on digits (README, "Faster sampling")


def settings(num: int) -> SampleSettings:
    """How --eval-every draws its samples: always seed 0, so steps differ only by their weights."""
    return SampleSettings(num=num, sampler=SAMPLER, steps=STEPS, seed=0, weights="ema")


def measure_quality_now(run: Run, num: int, measure, metric: str, what: str) -> dict:
    """The log.jsonl fields of one measurement: {"quality": {metric: value}, "metric": the one
    that decides the best step (lower is better), "measured_on", "samples": how they were drawn,
    "eval_s": its wall time}."""
    started = time.perf_counter()
    data, samples = draw_recorded(run, settings(num))
    scores = measure(data)
    return {"quality": scores, "metric": metric, "measured_on": what, "samples": samples,
            "eval_s": round(time.perf_counter() - started, 3)}

