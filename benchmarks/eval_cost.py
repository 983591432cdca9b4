"""What --eval-every costs on the digits default: one measurement (1,000 samples, dpm++sde at 20
steps from the EMA weights, scored in the run's own features) against the time of a training
step, measured in the same process one after the other, and what it would add to the main job.

    python benchmarks/eval_cost.py [--steps 200] [--repeats 3]

Prints seconds per training step, the first use's one-off cost (training the own feature
classifier and the real-data statistics, both cached afterwards), the seconds of one
measurement, and the main job's time with --eval-every 500 (6 measurements) against without.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import tempfile
import time
from pathlib import Path

import torch


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=200, help="training steps timed")
    p.add_argument("--repeats", type=int, default=3, help="measurements timed")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        os.environ.setdefault("DDPMKIT_CACHE", str(Path(tmp) / "cache"))  # a first use: nothing cached
        from ddpmkit import api, build
        from ddpmkit.evaluation import measures
        from ddpmkit.evaluation.during import measure_quality_now

        config = api.default_config("digits")
        main_job = config.train.steps
        config = dataclasses.replace(config, train=dataclasses.replace(config.train, steps=args.steps, checkpoint_every=0))
        result = api.train(config, Path(tmp) / "run", progress=False, pictures=False)
        per_step = result.seconds / result.steps
        run = build.load_run(Path(tmp) / "run")
        started = time.perf_counter()
        what, measure, metric = measures(run.modality).training_measure(run)
        setup = time.perf_counter() - started
        times = []
        for _ in range(args.repeats):
            record = measure_quality_now(run, run.modality.eval_samples, measure, metric, what)
            times.append(record["eval_s"])
        one = min(times)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"training: {per_step * 1000:.1f} ms per step (batch {config.train.batch_size}, {args.steps} steps)")
    print(f"first measurement's one-off cost (own features + real statistics, then cached): {setup:.1f} s")
    print(f"one measurement ({record['samples']['num']} samples, {record['samples']['sampler']} "
          f"{record['samples']['steps']} steps, {metric} {record['quality'][metric]:.4f}): {one:.2f} s "
          f"(of {', '.join(f'{t:.2f}' for t in times)}) = {one / per_step:.0f} training steps")
    plain = main_job * per_step
    evals = main_job // 500
    print(f"main job ({main_job} steps): {plain:.0f} s; with --eval-every 500 ({evals} measurements): "
          f"{plain + setup + evals * one:.0f} s (+{100 * (setup + evals * one) / plain:.0f}%)")


if __name__ == "__main__":
    main()
