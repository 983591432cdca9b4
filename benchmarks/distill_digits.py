"""Progressive distillation on the default digits run: each student's quality beside the teacher's.

Prints, for the digits default (the teacher: a trained default run, `--run`), the Fréchet distance
in the run's own features (the conv classifier ddpmkit trains on the digits, as `ddpmkit evaluate`
uses; mean ± sd over `--seeds` sets of `--num-samples`) of
  - the teacher with 1,000 ancestral DDPM steps (the reference the targets are set against),
  - the teacher with dpm++ and dpm++sde at each student's step count (and at 10 and 20),
  - each student of `ddpmkit distill` (DDIM on its own grid: 32, 16, 8, 4 steps from 64),
and the distillation's wall time beside the teacher's training time (its log.jsonl). Targets
(issue 20): the 4-step student within 10% of the teacher's 1,000-step DDPM FD, the 8-step
within 5%. The floor: random subsets of real digits of the same size.

    python benchmarks/distill_digits.py --run runs/digits-default --out /tmp/digits-distilled
    python benchmarks/distill_digits.py --run RUN --out OUT --quick        # a smoke run

The teacher's directory is only read: the own-feature classifier and the real statistics are
cached in ddpmkit's cache (DDPMKIT_CACHE), not in the run. A finished distillation in --out is
measured again without training it again; --json writes every number.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from ddpmkit import api, rundir
from ddpmkit.build import load_run
from ddpmkit.training.distill import DistillSettings, student_run
from ddpmkit.evaluation import image_reference, quick_scores


def fd(run, reference, n: int, seeds: int, **how) -> tuple[float, float, float]:
    """(mean, sd, ms per sample) of the FD of `seeds` sample sets of n drawn as `how` says."""
    values, secs = [], 0.0
    for seed in range(seeds):
        started = time.perf_counter()
        data = api.draw(run, n, api.SamplingRequest(seed=1000 + seed, **how)).data
        secs += time.perf_counter() - started
        values.append(quick_scores(reference, data)["frechet_distance"])
    return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else float("nan"), 1000 * secs / (seeds * n)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", type=Path, required=True, help="the trained default digits run (the teacher; only read)")
    p.add_argument("--out", type=Path, required=True, help="the distilled run (trained here unless it is complete)")
    p.add_argument("--to-steps", type=int, default=4)
    p.add_argument("--start-steps", type=int, default=64)
    p.add_argument("--rounds-steps", type=int, default=DistillSettings().rounds_steps)
    p.add_argument("--lr", type=float, default=DistillSettings().lr)
    p.add_argument("--num-samples", type=int, default=1000)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--skip-ddpm", action="store_true", help="leave out the 1,000-step DDPM reference (slow)")
    p.add_argument("--json", type=Path, help="also write every number here")
    p.add_argument("--quick", action="store_true", help="smoke test: 20 steps per round, 100 samples, one seed")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.quick:
        args.rounds_steps, args.num_samples, args.seeds = 20, 100, 1
    settings = DistillSettings(to_steps=args.to_steps, start_steps=args.start_steps, rounds_steps=args.rounds_steps,
                               lr=args.lr)
    record = rundir.read_distill_record(args.out)
    if record is None or not record["complete"]:
        print(f"distilling {args.run} into {args.out}: {settings}", flush=True)
        api.distill(args.run, args.out, settings, report=print, progress=False)
        record = rundir.read_distill_record(args.out)
    distill_s = sum(r["seconds"] for r in record["finished"])
    teacher_log = [r for r in rundir.read_log(args.run) if "elapsed_s" in r]
    train_s = teacher_log[-1]["elapsed_s"] if teacher_log else float("nan")

    # the teacher's run directory stays untouched: measure it from a copy of its config and weights
    scratch = Path(tempfile.mkdtemp(prefix="distill-bench-"))
    for name in ("config.json", "ema.safetensors"):
        shutil.copyfile(args.run / name, scratch / name)
    teacher = load_run(scratch)
    reference = image_reference(teacher, report=print)
    real = reference.dataset.images_uint8.permute(0, 2, 3, 1).numpy()
    rng = np.random.default_rng(0)
    floor = [quick_scores(reference, real[rng.choice(len(real), min(args.num_samples, len(real)), replace=False)])["frechet_distance"]
             for _ in range(5)]
    n, seeds = args.num_samples, args.seeds
    print(f"\nquality: Fréchet distance in {reference.extractor.description}; {n} samples x {seeds} seeds (mean ± sd)")
    print(f"floor (random real subsets of {n}): {statistics.mean(floor):.3f} ± {statistics.stdev(floor):.3f}\n")
    print(f"{'what':<34} {'NFE':>5} {'FD mean':>8} {'± sd':>6} {'ms/sample':>10}")
    rows: list[dict] = []

    def row(what: str, nfe: int, run, **how) -> dict:
        mean, sd, ms = fd(run, reference, n, seeds, **how)
        rows.append({"what": what, "nfe": nfe, "fd": mean, "sd": sd, "ms_per_sample": ms})
        print(f"{what:<34} {nfe:>5} {mean:>8.3f} {sd:>6.3f} {ms:>10.2f}", flush=True)
        return rows[-1]

    ddpm = None if args.skip_ddpm else row("teacher ddpm", 1000, teacher, sampler="ddpm", steps=None)
    student_steps = [r["student_steps"] for r in record["finished"]]
    for k in sorted(set(student_steps) | {10, 20}):
        for sampler in ("dpm++", "dpm++sde"):
            row(f"teacher {sampler}", k, teacher, sampler=sampler, steps=k)
        if k in student_steps:
            student = student_run(args.out, k)
            row("teacher ddim, the student's grid", k, dataclasses.replace(teacher, fixed=student.fixed), sampler=None)
            row(f"student, ddim on its {k}-step grid", k, student, sampler=None)
    print(f"\ndistillation: {len(record['finished'])} rounds of {record['settings']['rounds_steps']} steps, "
          f"{distill_s:.0f} s in all; the teacher's training: {train_s:.0f} s ({distill_s / train_s:.2f}×)")
    if ddpm is not None:
        for k, target in ((4, 1.10), (8, 1.05)):
            found = [r for r in rows if r["what"].startswith("student") and r["nfe"] == k]
            if found:
                ratio = found[0]["fd"] / ddpm["fd"]
                print(f"{k}-step student / teacher ddpm 1000: FD ratio {ratio:.2f} (target ≤ {target:.2f}: "
                      f"{'met' if ratio <= target else 'not met'})")
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "floor": floor, "distill_s": distill_s, "train_s": train_s,
                                         "record": record}, indent=2))
    shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
