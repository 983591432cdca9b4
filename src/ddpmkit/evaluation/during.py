"""Sample quality measured during training (--eval-every): samples from the EMA weights drawn as
`ddpmkit sample` draws them (the default sampling request, seed 0, balanced over the classes),
scored by the run's own measure (kinds.measures: the kind's training_measure), as one log.jsonl
record with the sample count and the resolved request beside the numbers."""

from __future__ import annotations

import time

from ..sampling import BALANCED, Run, SamplingRequest, draw_recorded

REQUEST = SamplingRequest(seed=0, classes=BALANCED)  # always seed 0, so steps differ only by their weights


def measure_quality_now(run: Run, num: int, measure, metric: str, what: str) -> dict:
    """The log.jsonl fields of one measurement: {"quality": {metric: value}, "metric": the one
    that decides the best step (lower is better), "measured_on", "samples": how they were drawn,
    "eval_s": its wall time}."""
    started = time.perf_counter()
    data, samples = draw_recorded(run, num, REQUEST)
    scores = measure(data)
    return {"quality": scores, "metric": metric, "measured_on": what, "samples": samples,
            "eval_s": round(time.perf_counter() - started, 3)}
