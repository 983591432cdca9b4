"""Autoguidance on moons: does guiding the default 2-D run by its own earlier EMA help?

Issue 31 item 6. For each training seed's default moons run (`ddpmkit train --data moons --seed S
--checkpoint-every 250 --keep 100 --out DIR/v-seedS`: v-prediction, 3,000 steps, the EMA weights
of every 250th step kept), `--num` points are drawn with `sample`'s default sampler (dpm++sde, 20
steps; sampling seeds 0, 1, 2, each cell their mean: the same noise in every row) without guidance and autoguided by the EMA
of an earlier checkpoint (`--autoguide step-N --autoguide-scale W`, Karras et al. 2024), and each
set is measured in the normalised space the model sees (zero mean, unit RMS, the points within
2.5) against as many fresh moons points (seed FRESH_SEED, never trained on):

- SW: the sliced Wasserstein distance (metrics.sliced_wasserstein, what `ddpmkit evaluate` reports);
- out%: the share of points beyond radius 5;
- P, R: improved precision and recall (k = 3, Kynkäänniemi et al. 2019), as `evaluate` measures them.

The floor: the same measures of other fresh points (seeds 1, 2, 3) against those.

    OMP_NUM_THREADS=1 python benchmarks/guidance_moons.py --runs /work/bench/moons-ag     # ~9 min on a busy 2-core CPU
    OMP_NUM_THREADS=1 python benchmarks/guidance_moons.py --guides 1500 --scales 2         # one row
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np

from ddpmkit import api, build, metrics
from ddpmkit.data.toy import FRESH_SEED, fresh_points, normalise
from points_samplers import beyond_radius  # the outlier measure of the few-step benchmark (radius 5)


def measure(config, data: np.ndarray) -> dict:
    """SW, out%, precision and recall of data-space points against as many fresh ones (normalised space)."""
    mean, scale = config.data.mean, config.data.scale
    x = normalise(data, mean, scale)
    real = normalise(fresh_points(config.data, len(data), FRESH_SEED), mean, scale)
    precision, recall = metrics.precision_recall(real, x, k=3)
    return {"sw": metrics.sliced_wasserstein(x, real), "out": beyond_radius(x),
            "precision": precision, "recall": recall}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=Path, default=Path("/work/bench/moons-ag"), help="the folder of the runs v-seed0, v-seed1, ...")
    p.add_argument("--seeds", default="0,1,2", help="training seeds")
    p.add_argument("--guides", default="500,1000,1500,2000,2500", help="the checkpoints' steps whose EMA guides, comma-separated")
    p.add_argument("--scales", default="2", help="autoguidance scales W, comma-separated")
    p.add_argument("--sampling-seeds", default="0,1,2", help="sampling seeds; each cell is their mean")
    p.add_argument("--num", type=int, default=5000, help="points per row")
    p.add_argument("--json", type=Path, default=None, help="write every measurement here")
    args = p.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    sampling_seeds = [int(s) for s in args.sampling_seeds.split(",")]
    rows = [("no guidance", None, None)] + [(f"autoguide step-{g} W={w:g}", f"step-{g}", w)
                                            for g in args.guides.split(",") for w in map(float, args.scales.split(","))]

    results: dict[str, list[dict]] = {label: [] for label, _, _ in rows}
    for seed in seeds:
        run_dir = args.runs / f"v-seed{seed}"
        base = build.load_run(run_dir)
        for label, guide, scale in rows:
            started = time.perf_counter()
            run = base if guide is None else build.load_guide(base, guide)
            each = []
            for sampling_seed in sampling_seeds:  # the same noise in every row
                request = api.SamplingRequest(seed=sampling_seed, guidance=api.Guidance(autoguide=guide, autoguide_scale=scale or 1.0))
                each.append(measure(run.config, api.draw(run, args.num, request).data))
            cell = {key: statistics.mean(m[key] for m in each) for key in each[0]}
            results[label].append({"seed": seed, "network_passes": request.record(run)["network_passes"], **cell})
            print(f"  seed {seed} {label:28s} SW {cell['sw']:.4f}  out {cell['out']:.2%}  P {cell['precision']:.3f}  "
                  f"R {cell['recall']:.3f}  ({time.perf_counter() - started:.1f} s)", flush=True)

    config = build.run_config(args.runs / f"v-seed{seeds[0]}")
    floors = [measure(config, fresh_points(config.data, args.num, 1 + k)) for k in range(len(sampling_seeds))]
    floor = {key: statistics.mean(m[key] for m in floors) for key in floors[0]}
    print(f"\nmoons, default run (v, 3,000 steps), {len(seeds)} training seeds, {args.num:,} points per cell, "
          f"dpm++sde 20 steps, each cell the mean over sampling seeds {args.sampling_seeds}; mean ± sd over the training "
          "seeds (each training seed's SW in brackets)")
    print(f"fresh points against fresh points (the floor): SW {floor['sw']:.4f}, P {floor['precision']:.3f}, "
          f"R {floor['recall']:.3f}")
    print("| row | network passes | SW | beyond r 5, % | P | R |\n| --- | ---: | ---: | ---: | ---: | ---: |")
    for label, _, _ in rows:
        cells = results[label]

        def stat(key: str, fmt: str) -> str:
            values = [c[key] for c in cells]
            sd = statistics.stdev(values) if len(values) > 1 else 0.0
            return f"{format(statistics.mean(values), fmt)} ± {format(sd, fmt)}"

        each = ", ".join(f"{c['sw']:.4f}" for c in cells)
        out = f"{100 * statistics.mean(c['out'] for c in cells):.2f}"
        print(f"| {label} | {cells[0]['network_passes']} | {stat('sw', '.4f')} ({each}) | {out} | "
              f"{stat('precision', '.3f')} | {stat('recall', '.3f')} |")
    if args.json:
        args.json.write_text(json.dumps({"num": args.num, "floor": floor, "rows": results}, indent=2))
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
