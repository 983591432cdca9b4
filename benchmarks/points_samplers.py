"""Few-step sampling on the 2-D sets: outliers and sliced Wasserstein, ε- against v-prediction.

Issue 31 item 4. For each 2-D set's default run (presets.points), trained once per prediction
and training seed, every sampler at every step count and timestep spacing draws `--num-samples`
points, and the script prints, for the ε-trained run and the v-trained run side by side:

- out%: the share of points farther than radius 5 from the origin in the normalised space (the
  space the model sees: zero mean, unit RMS per axis, where every set's points lie within 2.5),
  mean over training seeds (the largest seed's share in brackets where it differs);
- SW×: the sliced Wasserstein distance to as many fresh points (evaluation.toy_distances),
  divided by the same run's 1,000-step DDPM's, mean over seeds (target ≤ 2);
- |x̂0|: the median norm of x̂_0 the network gives for pure noise x_T at t = T−1, the first
  step of the linspace and trailing grids, where the cosine schedule's ᾱ is about 2·10⁻⁹: an
  ε-network's x̂_0 = (x_t − √(1−ᾱ) ε̂)/√ᾱ multiplies its ε error by 1/√ᾱ ≈ 2·10⁴ there; a
  v-network's x̂_0 = √ᾱ x_t − √(1−ᾱ) v̂ does not (Salimans & Ho 2022, Sec. 4).

    OMP_NUM_THREADS=1 python benchmarks/points_samplers.py                  # every set, 3 seeds (long)
    OMP_NUM_THREADS=1 python benchmarks/points_samplers.py --sets moons     # one set
    OMP_NUM_THREADS=1 python benchmarks/points_samplers.py --quick          # a smoke run, ~1 min

Runs are kept in --out (one folder per set, prediction and seed) and reused when present.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from ddpmkit import api
from ddpmkit.build import load_run
from ddpmkit.data.toy import TOY_DATASETS, normalise

RADIUS = 5.0  # normalised space: twice the farthest real point of any set


def beyond_radius(z: np.ndarray) -> float:
    """Share of normalised 2-D points farther than RADIUS from the origin."""
    return float((np.linalg.norm(z, axis=1) > RADIUS).mean())


def outlier_share(run, data: np.ndarray) -> float:
    """Share of data-space points beyond RADIUS in the run's normalised space."""
    return beyond_radius(normalise(data, run.config.data.mean, run.config.data.scale))


def first_step_x0(run) -> float:
    """Median |x̂_0| (normalised space) the run's network gives for pure noise at t = T−1."""
    T = run.config.diffusion.num_steps
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2000, 2, generator=g)
    with torch.no_grad():
        x0 = run.base(x, torch.full((2000,), T - 1, dtype=torch.long)).x0
    return float(x0.norm(dim=1).median())


def trained(name: str, prediction: str, seed: int, out: Path, steps: int | None) -> Path:
    run_dir = out / f"{name}-{prediction}-seed{seed}"
    if not (run_dir / "config.json").exists() or not any(run_dir.glob("*.safetensors")):
        config = api.default_config(name)
        train = config.train if steps is None else dataclasses.replace(config.train, steps=steps)
        config = dataclasses.replace(config, seed=seed, train=train,
                                     diffusion=dataclasses.replace(config.diffusion, prediction=prediction))
        started = time.perf_counter()
        api.train(config, run_dir, progress=False, pictures=False)
        print(f"  trained {run_dir.name} in {time.perf_counter() - started:.0f} s", flush=True)
    return run_dir


def measure(run, samplers, steps, spacings, n: int) -> dict:
    """{(sampler, steps, spacing): (outlier share, SW)} and the reference under key 'ddpm1000'."""
    def one(request):
        data = api.draw(run, n, request).data
        return outlier_share(run, data), api.toy_distances(run.config, data)["sliced_wasserstein"]

    T = run.config.diffusion.num_steps
    table = {"ddpm1000": one(api.SamplingRequest(seed=1, sampler="ddpm", steps=T)), "x0": first_step_x0(run)}
    for sampler in samplers:
        for k in steps:
            for spacing in spacings:
                table[sampler, k, spacing] = one(api.SamplingRequest(seed=1, sampler=sampler, steps=k, spacing=spacing))
    return table


def cell(tables: list[dict], key) -> str:
    shares = [100 * t[key][0] for t in tables]
    ratios = [t[key][1] / t["ddpm1000"][1] for t in tables]
    worst = f"({max(shares):.1f})" if max(shares) - statistics.mean(shares) > 0.05 else ""
    return f"{statistics.mean(shares):6.1f}{worst:<7} {statistics.mean(ratios):6.2f}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sets", default=",".join(TOY_DATASETS), help="2-D sets, comma-separated")
    p.add_argument("--predictions", default="eps,v")
    p.add_argument("--seeds", type=int, default=3, help="training seeds per set and prediction")
    p.add_argument("--samplers", default="ddim,dpm++,dpm++sde,heun,ddpm")
    p.add_argument("--steps", default="20,10")
    p.add_argument("--spacings", default="linspace,leading,trailing")
    p.add_argument("--num-samples", type=int, default=2000)
    p.add_argument("--train-steps", type=int, default=None, help="optimiser steps (default: the preset's)")
    p.add_argument("--out", type=Path, default=Path("runs/bench-points-samplers"))
    p.add_argument("--quick", action="store_true", help="smoke run: moons, one seed, 300 training steps")
    args = p.parse_args()
    torch.set_num_threads(1)
    if args.quick:
        args.sets, args.seeds, args.train_steps, args.out = "moons", 1, 300, args.out / "quick"
    predictions = args.predictions.split(",")
    samplers, spacings = args.samplers.split(","), args.spacings.split(",")
    steps = [int(s) for s in args.steps.split(",")]
    print(f"{args.num_samples} samples per cell; out%: share beyond radius {RADIUS:g} (normalised space), mean over "
          f"{args.seeds} training seeds (worst); SW×: sliced Wasserstein / the same run's DDPM-1000", flush=True)
    for name in args.sets.split(","):
        tables: dict[str, list[dict]] = {pred: [] for pred in predictions}
        for pred in predictions:
            for seed in range(args.seeds):
                run = load_run(trained(name, pred, seed, args.out, args.train_steps))
                tables[pred].append(measure(run, samplers, steps, spacings, args.num_samples))
        print(f"\n{name}: " + "; ".join(
            f"{pred}: DDPM-1000 SW {statistics.mean(t['ddpm1000'][1] for t in tables[pred]):.4f}, "
            f"out% {statistics.mean(100 * t['ddpm1000'][0] for t in tables[pred]):.1f}, "
            f"median |x̂0| at t=T-1 for noise {statistics.mean(t['x0'] for t in tables[pred]):.3g}" for pred in predictions))
        print(f"{'sampler':<9}{'steps':>5} {'spacing':<9}" + "".join(f" | {pred + ' out%':>13} {'SW×':>6}" for pred in predictions))
        for sampler in samplers:
            for k in steps:
                for spacing in spacings:
                    print(f"{sampler:<9}{k:>5} {spacing:<9}" + "".join(
                        f" | {cell(tables[pred], (sampler, k, spacing))}" for pred in predictions), flush=True)


if __name__ == "__main__":
    main()
