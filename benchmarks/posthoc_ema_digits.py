"""Post-hoc EMA on the default digits run: the measure at the best σ_rel against the classic EMA.

Trains the digits default with --posthoc-ema (profiles σ_rel 0.05 and 0.10, a snapshot every
150 of the 3,000 steps), then runs `ddpmkit ema --sweep`'s sweep (api.sweep_posthoc_ema, seed 0)
over the σ_rel grid to pick the best width, and measures that reconstruction and the classic EMA
(ema.safetensors, decay 0.999 with warm-up) on `--seeds` further independent sample sets
(seeds 1000, 1001, ...: not the seed the choice was made on, so the comparison carries no
selection bias). Quality: the Fréchet distance in the run's own features (the conv classifier
ddpmkit trains on the digits, kept in RUN/features/, as `ddpmkit evaluate` uses) to the 1,617
digits the run trained on, of `--num-samples` samples from dpm++sde with 20 steps; mean ± sd over
the seeds. Also printed: the same distance for random subsets of real digits of that size, the
floor sampling noise alone gives.

    python benchmarks/posthoc_ema_digits.py                       # trains into runs/bench-posthoc-digits (~4 min)
    python benchmarks/posthoc_ema_digits.py --run DIR             # a digits run trained with --posthoc-ema
    python benchmarks/posthoc_ema_digits.py --quick               # a smoke run: 200 steps, 100 samples, one seed
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from ddpmkit import api, checkpoint
from ddpmkit.build import load_run
from ddpmkit.evaluation import image_reference, quick_scores
from ddpmkit.posthoc_ema import DEFAULT_SIGMA_RELS, SWEEP_SIGMA_RELS


def mean_sd(values: list[float]) -> str:
    sd = statistics.stdev(values) if len(values) > 1 else float("nan")
    return f"{statistics.mean(values):.3f} ± {sd:.3f}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", type=Path, help="a digits run trained with --posthoc-ema (default: train one into --out)")
    p.add_argument("--out", type=Path, default=Path("runs/bench-posthoc-digits"), help="where to train when --run is not given")
    p.add_argument("--sigma-rels", default=",".join(f"{s:g}" for s in SWEEP_SIGMA_RELS), help="the sweep's grid")
    p.add_argument("--num-samples", type=int, default=1000)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: all cores)")
    p.add_argument("--quick", action="store_true", help="smoke test: a 200-step run, 100 samples, one seed")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.quick:
        args.num_samples, args.seeds = 100, 1
    sigma_rels = [float(s) for s in args.sigma_rels.split(",")]
    run_dir = args.run
    if run_dir is None:
        run_dir = args.out
        config = api.default_config("digits")
        train = dataclasses.replace(config.train, posthoc_ema=DEFAULT_SIGMA_RELS, steps=200 if args.quick else config.train.steps)
        config = dataclasses.replace(config, train=train)
        if not (run_dir / "config.json").exists():
            print(f"training the default digits config with --posthoc-ema into {run_dir} ...", flush=True)
            result = api.train(config, run_dir, progress=False)
            print(f"trained {result.steps} steps in {result.seconds:.0f} s", flush=True)
    snapshots = checkpoint.snapshots(run_dir)
    size = sum(s.path.stat().st_size for s in snapshots)
    print(f"{len(snapshots)} snapshots in {run_dir}/posthoc ({size / 2**20:.1f} MiB)")

    started = time.perf_counter()
    sweep = api.sweep_posthoc_ema(run_dir, sigma_rels, num=args.num_samples, seed=0, report=print)
    print(f"sweep (seed 0) in {time.perf_counter() - started:.0f} s: best σ_rel {sweep['best_sigma_rel']:.3f}\n", flush=True)

    run = load_run(run_dir)  # the classic EMA
    reference = image_reference(run, report=print)
    real = reference.dataset.images_uint8.permute(0, 2, 3, 1).numpy()  # [N, 8, 8, 1]: the training digits
    rng = np.random.default_rng(0)
    floor = [quick_scores(reference, real[rng.choice(len(real), min(args.num_samples, len(real)), replace=False)])["frechet_distance"]
             for _ in range(5)]
    seeds = [1000 + i for i in range(args.seeds)]
    print(f"quality: Fréchet distance in {reference.extractor.description} to {reference.description['what']}; "
          f"{args.num_samples} samples from dpm++sde, 20 steps, seeds {seeds}")
    print(f"floor (random real subsets of {min(args.num_samples, len(real))}): {mean_sd(floor)}")
    best = checkpoint.load_weights(Path(sweep["written"]))
    for name, weights in (("classic EMA (0.999)", None), (f"post-hoc σ_rel {sweep['best_sigma_rel']:.3f}", best)):
        if weights is not None:
            checkpoint.load_matching(run.net, weights, Path(sweep["written"]))
        fds = [quick_scores(reference, api.draw(run, args.num_samples, api.SamplingRequest(seed=s, sampler="dpm++sde", steps=20)).data)["frechet_distance"]
               for s in seeds]
        print(f"{name:<22} FD {mean_sd(fds)}   ({', '.join(f'{v:.3f}' for v in fds)})", flush=True)


if __name__ == "__main__":
    main()
