"""The main job (`ddpmkit train` on the digits) with the old defaults against the new: wall time
of the whole command and the sample quality it holds.

Issue 20's target: the new default reaches the old default's sample quality in at most 35% of
its wall time, on the same machine, measured side by side in one run.

  old  `ddpmkit train` of commit 580b258 (3,000 steps, fp32, the end-of-run grid at 1,000 DDPM
       steps), run from a copy of that commit's src/ (`git archive`), so nothing is emulated;
  new  `ddpmkit train` of this checkout (its defaults: presets.digits).
Each is one `python -m ddpmkit train --out DIR` subprocess, timed from start to exit (imports,
data loading, training, checkpoints and the end-of-run pictures), in the order old, new, old,
new, ... for --repeats rounds; the figure is the median wall time and the ratio new ÷ old per
round. The subprocesses get --threads torch threads (OMP_NUM_THREADS).

Quality (the last round's runs): the Fréchet distance in the run's own features (the conv
classifier ddpmkit trains on the digits, as `ddpmkit evaluate` uses; one classifier, the old
run's, measures both) to the 1,617 training digits, of --num-samples samples from the EMA
weights with --sampler at --steps, for --seeds seeds (1000, 1001, ...): mean ± sd. Beside it
the floor: the same distance for random subsets of as many real digits (sampling noise alone).

    python benchmarks/main_job_digits.py                  # ~15 min on a quiet 2-core CPU
    python benchmarks/main_job_digits.py --quick          # smoke run: 300 against 150 steps, 200 samples, 1 seed
    python benchmarks/main_job_digits.py --sampler ddpm --steps 1000   # quality at 1,000 DDPM steps
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
OLD_COMMIT = "580b258"  # the defaults issue 20 started from


def mean_sd(values: list[float]) -> str:
    sd = statistics.stdev(values) if len(values) > 1 else float("nan")
    return f"{statistics.mean(values):.3f} ± {sd:.3f}"


def old_source(into: Path) -> Path:
    """src/ of OLD_COMMIT extracted under `into` (git archive: no worktree, no checkout)."""
    archive = subprocess.run(["git", "-C", str(REPO), "archive", OLD_COMMIT, "src"], check=True, capture_output=True).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    return into / "src"


def train(src: Path, out: Path, threads: int, extra: list[str]) -> float:
    """Wall seconds of `python -m ddpmkit train --out OUT` with ddpmkit imported from `src`."""
    env = {**os.environ, "PYTHONPATH": str(src), "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "ddpmkit", "train", "--out", str(out), "--no-progress", *extra],
                          env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode:
        raise SystemExit(f"training into {out} failed:\n{done.stderr[-2000:]}")
    return seconds


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=2, help="torch threads of each training and of the measurement")
    p.add_argument("--repeats", type=int, default=1, help="rounds of (old, new) trainings")
    p.add_argument("--num-samples", type=int, default=1000)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--sampler", default="dpm++sde", help="the sampler quality is measured with")
    p.add_argument("--steps", type=int, default=20, help="its steps")
    p.add_argument("--keep", type=Path, help="keep the runs here (default: a temporary folder)")
    p.add_argument("--quick", action="store_true", help="smoke run: 300 against 150 steps, 200 samples, one seed")
    args = p.parse_args()
    if args.quick:
        args.num_samples, args.seeds = 200, 1
    old_flags, new_flags = (["--steps", "300"], ["--steps", "150"]) if args.quick else ([], [])

    with tempfile.TemporaryDirectory() as tmp:
        root = args.keep or Path(tmp)
        old_src, new_src = old_source(Path(tmp) / "old"), REPO / "src"
        print(f"old: ddpmkit at {OLD_COMMIT} (its defaults{' ' + ' '.join(old_flags) if old_flags else ''}); "
              f"new: this checkout ({' '.join(new_flags) or 'its defaults'}); {args.threads} threads; "
              f"load average before: {os.getloadavg()[0]:.2f}", flush=True)
        seconds: dict[str, list[float]] = {"old": [], "new": []}
        for r in range(args.repeats):
            for name, src, flags in (("old", old_src, old_flags), ("new", new_src, new_flags)):
                out = root / f"{name}-{r}"
                seconds[name].append(train(src, out, args.threads, flags))
                print(f"  round {r + 1}: {name} {seconds[name][-1]:.1f} s", flush=True)
        print(f"load average after: {os.getloadavg()[0]:.2f}")

        # Quality, measured with this checkout's code (both run directories load with it).
        sys.path.insert(0, str(new_src))
        import torch

        from ddpmkit import api
        from ddpmkit.build import load_run
        from ddpmkit.evaluation import image_reference, quick_scores

        torch.set_num_threads(args.threads)
        last = args.repeats - 1
        runs = {name: load_run(root / f"{name}-{last}") for name in ("old", "new")}
        reference = image_reference(runs["old"])
        real = reference.dataset.images_uint8.permute(0, 2, 3, 1).numpy()
        rng = np.random.default_rng(0)
        n_real = min(args.num_samples, len(real))
        floor = [quick_scores(reference, real[rng.choice(len(real), n_real, replace=False)])["frechet_distance"] for _ in range(5)]
        seeds = [1000 + i for i in range(args.seeds)]
        fd = {name: [quick_scores(reference, api.draw(run, args.num_samples, api.SamplingRequest(seed=s, sampler=args.sampler, steps=args.steps)).data)
                     ["frechet_distance"] for s in seeds] for name, run in runs.items()}

    print(f"\nquality: FD in {reference.extractor.description} to {reference.description['what']}; "
          f"{args.num_samples} samples from {args.sampler} at {args.steps} steps, seeds {seeds}")
    print(f"floor (random real subsets of {n_real}): {mean_sd(floor)}")
    print(f"{'defaults':<9} {'wall s (median)':>16} {'FD':>16}")
    for name in ("old", "new"):
        print(f"{name:<9} {statistics.median(seconds[name]):>16.1f} {mean_sd(fd[name]):>16}   "
              f"({', '.join(f'{v:.3f}' for v in fd[name])})")
    ratios = [n / o for n, o in zip(seconds["new"], seconds["old"])]
    print(f"\nnew ÷ old wall time: {statistics.median(ratios):.2f} (per round {min(ratios):.2f}-{max(ratios):.2f}; "
          f"target ≤ 0.35: {'met' if statistics.median(ratios) <= 0.35 else 'not met'})")
    gap = statistics.mean(fd["new"]) - statistics.mean(fd["old"])
    print(f"FD new − old: {gap:+.3f} (floor sd {statistics.stdev(floor):.3f})")


if __name__ == "__main__":
    main()
