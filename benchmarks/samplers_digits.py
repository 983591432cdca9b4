"""Sample quality against network evaluations on the default digits run, every sampler.

Target (issue: fast samplers): DPM-Solver++ with 20 steps within 10% of 1,000-step DDPM on
the quality measure, at 50× fewer network evaluations. Printed for both forms: `dpm++` (the
probability-flow ODE) and `dpm++sde` (SDE-DPM-Solver++, the reverse SDE).

Quality: the Fréchet distance in the run's own features (the conv classifier ddpmkit trains
on the digits, kept in RUN/features/, as `ddpmkit evaluate` uses) between the samples and the
digits the run trained on (1,617: the default holds 180 out), averaged over `--seeds` independent sample sets of `--num-samples` each.
The script also prints the same distance for random subsets of *real* digits of the same
size: the floor that sampling noise alone gives, so differences below it mean nothing.

    python benchmarks/samplers_digits.py --run runs/digits-<time>     # a trained default run
    python benchmarks/samplers_digits.py --out /tmp/digits-bench        # trains one first (~5 min)
    python benchmarks/samplers_digits.py --quick                        # a smoke run, ~1 min
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from ddpmkit import api
from ddpmkit.build import load_run
from ddpmkit.evaluation import image_reference, quick_scores
from ddpmkit.sampling import network_evaluations


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", type=Path, help="a trained digits run (default: train the default config into --out)")
    p.add_argument("--out", type=Path, default=Path("runs/bench-samplers-digits"), help="where to train when --run is not given")
    p.add_argument("--samplers", default="ddpm,ddim,dpm++,dpm++sde,heun")
    p.add_argument("--steps", default="10,20,50,100")
    p.add_argument("--reference", default="ddpm:1000", help="SAMPLER:STEPS measured besides (the 1,000-step DDPM)")
    p.add_argument("--num-samples", type=int, default=1000)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: all cores)")
    p.add_argument("--quick", action="store_true", help="smoke test: a 200-step run, 100 samples, one seed")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    steps = [int(s) for s in args.steps.split(",")]
    if args.quick:
        args.num_samples, args.seeds, steps = 100, 1, [10, 20, 100]
    run_dir = args.run
    if run_dir is None:
        config = api.default_config("digits")
        if args.quick:
            import dataclasses

            config = dataclasses.replace(config, train=dataclasses.replace(config.train, steps=200))
        run_dir = args.out
        if not (run_dir / "config.json").exists():
            print(f"training the default digits config into {run_dir} ...", flush=True)
            api.train(config, run_dir, progress=False)
    run = load_run(run_dir)
    reference = image_reference(run, report=print)
    real = reference.dataset.images_uint8.permute(0, 2, 3, 1).numpy()  # [N, 8, 8, 1]: the training digits

    rng = np.random.default_rng(0)
    floor = [quick_scores(reference, real[rng.choice(len(real), min(args.num_samples, len(real)), replace=False)])["frechet_distance"]
             for _ in range(5)]
    print(f"quality: Fréchet distance in {reference.extractor.description} to {reference.description['what']}; "
          f"{args.num_samples} samples x {args.seeds} seeds")
    print(f"floor (random real subsets of {args.num_samples}): {statistics.mean(floor):.3f} ± {statistics.stdev(floor):.3f}\n")
    print(f"{'sampler':<8} {'steps':>5} {'NFE':>5} {'FD mean':>8} {'± sd':>6} {'conf':>6} {'ms/sample':>10}")
    table: dict[tuple[str, int], float] = {}
    ref_name, ref_steps = args.reference.split(":")
    settings = [(name, k) for name in args.samplers.split(",") for k in steps] + [(ref_name, int(ref_steps))]
    for name, k in settings:
        fds, confs, secs = [], [], 0.0
        for seed in range(args.seeds):
            started = time.perf_counter()
            data = api.draw(run, args.num_samples, api.SamplingRequest(seed=1000 + seed, sampler=name, steps=k)).data
            secs += time.perf_counter() - started
            q = quick_scores(reference, data)
            fds.append(q["frechet_distance"])
            confs.append(q["confidence"])
        table[name, k] = statistics.mean(fds)
        sd = statistics.stdev(fds) if len(fds) > 1 else float("nan")
        print(f"{name:<8} {k:>5} {network_evaluations(name, k):>5} {table[name, k]:>8.3f} {sd:>6.3f} "
              f"{statistics.mean(confs):>6.3f} {1000 * secs / (args.seeds * args.num_samples):>10.2f}", flush=True)
    reference = table[ref_name, int(ref_steps)]
    for name in ("dpm++", "dpm++sde"):
        if (name, 20) in table:
            print(f"{name} 20 steps / {ref_name} {ref_steps} steps: FD ratio {table[name, 20] / reference:.2f} "
                  f"(target ≤ 1.10) at {network_evaluations(ref_name, int(ref_steps)) // 20}× fewer network evaluations")


if __name__ == "__main__":
    main()
