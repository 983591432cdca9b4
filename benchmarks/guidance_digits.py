"""Autoguidance and guidance intervals on the default digits run, over training seeds (issue 31 item 5).

For each trained default run (950 steps; `ddpmkit train --seed S --checkpoint-every 95 --keep 100`,
so every 95th step's EMA weights are there to serve as guides), 1,000 samples per row, each row
drawn from the same sampling seed, measured in the run's own features (the conv classifier
`ddpmkit evaluate` uses, RUN/features/) against the 1,617 training digits:

- FD: the Fréchet distance of the 1,000 samples (lower is better);
- P, R: improved precision and recall (k = 3) at equal set sizes of 1,000, as `ddpmkit evaluate`
  measures them (its default takes 2,000 samples);
- P180, R180: the same measures at set size 180, the mean over the 5 disjoint sets of 180 of the
  samples, each against the same seeded 180 training digits. The 180 held-out digits (never
  trained on) are measured exactly so: the real-data level, printed as the first row. k-NN
  precision and recall depend on the set size, so only the 180 columns compare with real digits.

Rows: no guidance (dpm++sde, 20 steps), autoguidance by each guide step × each W, a guidance
interval, the ODE (dpm++, 64 steps) without and with autoguidance, 1,000-step DDPM; mean ± sd over
the training seeds; the old 3,000-step default's recorded figures beside (docs/speed.md).

    python benchmarks/guidance_digits.py --runs /work/bench/seed-0,/work/bench/seed-1,/work/bench/seed-2
    python benchmarks/guidance_digits.py --runs RUN --quick       # a smoke run: 200 samples, 2 rows

Every row is appended to --out (JSON lines: run, row, numbers) as soon as it is measured, and a row
already there for that run is not measured again, so the runs can be measured one at a time as
they finish training (--runs RUN --out F, again for the next) and the table printed from the file
(--table --out F).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from ddpmkit import metrics
from ddpmkit.build import load_guide, load_run
from ddpmkit.checkpoint import step_dir
from ddpmkit.evaluation import image_reference
from ddpmkit.evaluation.quality import feature_scores, nhwc_to_nchw
from ddpmkit.evaluation.reference import REFERENCE_SEED
from ddpmkit.sampling import Guidance, SamplingRequest, draw, passes

OLD_DEFAULT = "old default (3,000 steps, recorded in docs/speed.md): FD 0.155 ± 0.018 (2 training seeds), precision 0.966, recall 0.895 (evaluate, 2,000 samples)"
SMALL = 180  # the held-out digits of the default run: the set size of the real-data level


def rows(guides: list[int], scales: list[float], interval: tuple[float, float]) -> list[tuple[str, str | None, dict]]:
    """(label, guide name or None, SamplingRequest keywords) of every measured row, the most telling first
    (on a busy machine the last may not be reached): no guidance; the middle guide at W = 2, then the
    other guides at W = 2, the middle guide's other W; the interval; the ODE; the other W; 1,000-step DDPM."""
    sde = {"sampler": "dpm++sde", "steps": 20}
    mid = guides[len(guides) // 2]
    first = [(mid, 2.0)] + [(g, 2.0) for g in guides if g != mid] + [(mid, w) for w in scales if w != 2.0]
    rest = [(g, w) for g in guides for w in scales if (g, w) not in first]
    guided = lambda pairs: [(f"autoguide step-{g} W={w:g}", f"step-{g}", {**sde, "w": w}) for g, w in pairs]  # noqa: E731
    return [("no guidance, dpm++sde 20", None, sde), *guided(first),
            *[(f"autoguide step-{mid} W={w:g} σ∈[{interval[0]:g},{interval[1]:g}]", f"step-{mid}",
               {**sde, "w": w, "interval": interval}) for w in (2.0, 3.0)],
            (f"autoguide step-{mid} W=2, dpm++ 64 (ODE)", f"step-{mid}", {"sampler": "dpm++", "steps": 64, "w": 2.0}),
            ("no guidance, dpm++ 64 (ODE)", None, {"sampler": "dpm++", "steps": 64}),
            *guided(rest),
            ("no guidance, ddpm 1000", None, {"sampler": "ddpm", "steps": 1000})]


def request(spec: dict, guide: str | None, seed: int) -> SamplingRequest:
    g = Guidance(autoguide=guide or "none", autoguide_scale=spec.get("w", 2.0), interval=spec.get("interval"))
    return SamplingRequest(sampler=spec["sampler"], steps=spec["steps"], seed=seed, guidance=g)


def measure(reference, features: np.ndarray) -> dict:
    """FD, P, R at the full set size; P180, R180 (and FD180) over disjoint sets of SMALL."""
    full = feature_scores(reference, features)
    real = reference.stats.features
    real_small = real[np.sort(np.random.default_rng(REFERENCE_SEED).permutation(len(real))[:SMALL])]
    order = np.random.default_rng(1).permutation(len(features))
    sets = [features[order[i:i + SMALL]] for i in range(0, len(features) - SMALL + 1, SMALL)]
    pr = [metrics.precision_recall(real_small, s, k=3) for s in sets]
    fd_small = [metrics.frechet_distance_from_statistics(*metrics.gaussian_statistics(s), reference.stats.mu, reference.stats.sigma)
                for s in sets]
    return {"FD": full["frechet_distance"], "P": full["precision"], "R": full["recall"],
            "FD180": float(np.mean(fd_small)), "P180": float(np.mean([p for p, _ in pr])), "R180": float(np.mean([r for _, r in pr]))}


def table_of(lines: list[dict]) -> None:
    """The markdown table of every row in `lines`: mean ± sd over the runs that measured it."""
    results: dict[str, list[dict]] = {}
    for line in lines:
        results.setdefault(line["row"], []).append(line)
    real = results.pop("real", [])
    runs = sorted({line["run"] for line in lines})
    print(f"\n{len(runs)} training seeds ({', '.join(runs)}); mean ± sd over training seeds\n")
    cols = ("FD", "P", "R", "FD180", "P180", "R180")
    print("| row | seeds | network passes | " + " | ".join(cols) + " |")
    print("| --- | ---: | ---: | " + " | ".join("---:" for _ in cols) + " |")
    for label, found in [("real", real), *results.items()]:
        name = "held-out real digits (180): the real-data level" if label == "real" else label
        cells = []
        for c in cols:
            if label == "real" and c in ("FD", "P", "R"):
                cells.append("")
                continue
            values = [f[c] for f in found]
            sd = f" ± {statistics.stdev(values):.3f}" if len(values) > 1 else ""
            cells.append(f"{statistics.mean(values):.3f}{sd}")
        passes_cell = "" if label == "real" else str(found[0]["passes"])
        print(f"| {name} | {len(found)} | {passes_cell} | " + " | ".join(cells) + " |")
    print(f"\n{OLD_DEFAULT}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", default="", help="comma-separated default digits runs (one per training seed)")
    p.add_argument("--guides", default="285,380,475,570", help="guide checkpoint steps")
    p.add_argument("--scales", default="1.5,2,2.5", help="autoguidance W")
    p.add_argument("--interval", default="0.28,5.42", help="σ_lo,σ_hi of the interval rows (Kynkäänniemi et al. 2024's EDM2 interval)")
    p.add_argument("--num-samples", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0, help="the sampling seed of every row")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", type=Path, default=Path("guidance_digits.jsonl"), help="the rows measured (JSON lines)")
    p.add_argument("--table", action="store_true", help="only print the table of --out")
    p.add_argument("--only", default="", help="the table of the runs whose name contains this (e.g. @665)")
    p.add_argument("--skip", default="", help="semicolon-separated row labels (or prefixes) not to measure")
    p.add_argument("--main-step", type=int, help="the main model: the EMA of this checkpoint step (default: the run's final EMA)")
    p.add_argument("--quick", action="store_true", help="smoke run: 200 samples, the first two rows")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    table = rows([int(g) for g in args.guides.split(",")], [float(w) for w in args.scales.split(",")],
                 tuple(float(v) for v in args.interval.split(",")))
    if args.quick:
        args.num_samples, table = 200, table[:2]
    skip = [s for s in args.skip.split(";") if s]
    done = [json.loads(line) for line in args.out.read_text().splitlines()] if args.out.is_file() else []
    for run_dir in [r for r in args.runs.split(",") if r and not args.table]:
        name = run_dir if args.main_step is None else f"{run_dir}@{args.main_step}"
        measured = {line["row"] for line in done if line["run"] == name}
        weights = "ema" if args.main_step is None else str(step_dir(Path(run_dir), args.main_step) / "ema.safetensors")
        run = load_run(Path(run_dir), weights)
        reference = image_reference(run, "own", report=print)
        todo = [("real", None, None)] + [row for row in table if not any(row[0].startswith(s) for s in skip)]
        guides = {}
        for label, guide, spec in todo:
            if label in measured:
                continue
            t0 = time.perf_counter()
            if label == "real":
                scores = measure(reference, reference.extractor.features(run.modality.load_heldout().images_uint8))
            else:
                if guide is not None and guide not in guides:
                    guides[guide] = load_guide(run, guide)
                sampled = guides[guide] if guide is not None else run
                r = request(spec, guide, args.seed)
                data = draw(sampled, args.num_samples, r).data
                scores = measure(reference, reference.extractor.features(nhwc_to_nchw(data)))
                scores["passes"] = sum(passes(sampled, r))
            line = {"run": name, "row": label, **scores, "seconds": round(time.perf_counter() - t0, 1),
                    "num_samples": args.num_samples}
            done.append(line)
            with args.out.open("a") as f:
                f.write(json.dumps(line) + "\n")
            print(json.dumps(line), flush=True)
    table_of([line for line in done if args.only in line["run"]] if args.only else done)


if __name__ == "__main__":
    main()
