"""What `train --guide-width W` adds to a training step of the digits default (U-Net of base width 32,
batch 128): the time per step with the narrow guide training beside the main network against the
time without it, on one thread.

The configurations run interleaved (none, then each W, `--reps` times), each for `--steps` steps of
Trainer.fit without its final checkpoint, with `--guide-at 0` so the guide trains on every step
timed. Prints, per W, the median over the reps of the ratio to the run without a guide, of the wall
time and of the process's CPU time (on a shared, busy machine the CPU time is the steadier one), and
the medians in ms per step. With the digits default's --guide-at 0.5 the guide trains on half the
steps, so a whole run pays half the per-step overhead.

    OMP_NUM_THREADS=1 python benchmarks/guide_width_cost.py                  # ~3 min on a busy 2-core CPU
    OMP_NUM_THREADS=1 python benchmarks/guide_width_cost.py --widths 16,8 --reps 8 --steps 20
"""

from __future__ import annotations

import argparse
import dataclasses
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from ddpmkit import api, rundir
from ddpmkit.training import diffusion


def time_steps(width: int, steps: int, out: Path) -> tuple[float, float]:
    """(wall s, CPU s) per step of `steps` steps of the digits default with guide_width `width` (0: none)."""
    base = api.default_config("digits")
    train = dataclasses.replace(base.train, steps=steps, guide_at=0.0, guide_width=width, log_every=steps, checkpoint_every=0)
    shutil.rmtree(out, ignore_errors=True)
    trainer, resolved, _ = diffusion.trainer(dataclasses.replace(base, train=train), out, progress=False)
    rundir.write_config(out, resolved)
    trainer.save = lambda: None  # the steps alone, not the final checkpoint
    wall, cpu = time.perf_counter(), time.process_time()
    trainer.fit()
    return (time.perf_counter() - wall) / steps, (time.process_time() - cpu) / steps


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--widths", default="16,8", help="guide widths W to time beside none (comma-separated)")
    p.add_argument("--reps", type=int, default=8, help="interleaved repetitions of every configuration")
    p.add_argument("--steps", type=int, default=20, help="steps timed per repetition")
    args = p.parse_args()
    widths = (0, *(int(w) for w in args.widths.split(",")))
    wall: dict[int, list[float]] = {w: [] for w in widths}
    cpu: dict[int, list[float]] = {w: [] for w in widths}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.reps):
            for w in widths:
                a, b = time_steps(w, args.steps, Path(tmp) / f"w{w}")
                wall[w].append(a)
                cpu[w].append(b)
    for w in widths[1:]:
        ratio_wall = statistics.median(a / b for a, b in zip(wall[w], wall[0]))
        ratio_cpu = statistics.median(a / b for a, b in zip(cpu[w], cpu[0]))
        print(f"--guide-width {w}: {ratio_wall:.2f}x the wall time per step, {ratio_cpu:.2f}x the CPU time "
              f"(median of {args.reps} interleaved reps of {args.steps} steps)")
    print("ms per step (medians): " + ", ".join(
        f"{'none' if w == 0 else f'W={w}'} {1000 * statistics.median(wall[w]):.0f} wall, {1000 * statistics.median(cpu[w]):.0f} CPU"
        for w in widths))


if __name__ == "__main__":
    main()
