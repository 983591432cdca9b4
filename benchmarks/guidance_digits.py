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

A conditional run (`ddpmkit train --conditional --seed S --checkpoint-every 95 --keep 100`) takes its own
rows, every one balanced over the ten classes (the same labels in every row): the conditional model
without guidance; classifier-free guidance (Ho & Salimans 2021, ε = (1+w)·ε(x,c) − w·ε(x,∅)) at each
--cfg w; autoguidance by the run's kept guide (auto, its step-475 EMA) at each --cond-scales W; both
(each --both w on top of autoguidance at W = 2). Each also measures the class agreement: the share of
the samples drawn for class c that the run's classifier (the same conv classifier of RUN/features/;
in the real row, its agreement with the labels of the 180 held-out digits) assigns to c. The table
of the conditional runs is followed by the comparison at equal class agreement: for each family
(CFG, autoguidance, both) FD, P, R, P180 and R180 interpolated linearly along its scales (from the
unguided row up) to where it reaches each agreement of --agreements, per run, then mean ± sd.

    python benchmarks/guidance_digits.py --runs /work/bench/cond-0,/work/bench/cond-1,/work/bench/cond-2 \
        --agreements 0.98,0.985,0.99,0.995                          # the conditional rows

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


CFG, AUTO, BOTH = "conditional, CFG", "conditional, autoguide auto", "conditional, both"  # the conditional families
COND_NONE = "conditional, no guidance, dpm++sde 20"


def cfg_label(w: float) -> str:
    return f"{CFG} w={w:g}"


def auto_label(scale: float) -> str:
    return f"{AUTO} W={scale:g}"


def both_label(w: float) -> str:
    return f"{BOTH}: CFG w={w:g} + autoguide auto W=2"


def conditional_rows(cfg: list[float], scales: list[float], both: list[float]) -> list[tuple[str, str | None, dict]]:
    """The rows of a conditional run (labels balanced over its classes, dpm++sde on 20 steps), the most
    telling first: no guidance; CFG w = 1, autoguidance W = 2, both; then the other scales."""
    sde = {"sampler": "dpm++sde", "steps": 20, "classes": "balanced"}
    first = [(cfg_label(1.0), None, {**sde, "cfg": 1.0}), (auto_label(2.0), "auto", {**sde, "w": 2.0}),
             (both_label(1.0), "auto", {**sde, "cfg": 1.0, "w": 2.0})]
    rest = ([(cfg_label(w), None, {**sde, "cfg": w}) for w in cfg]
            + [(auto_label(s), "auto", {**sde, "w": s}) for s in scales]
            + [(both_label(w), "auto", {**sde, "cfg": w, "w": 2.0}) for w in both])
    return [(COND_NONE, None, sde), *first, *[row for row in rest if row[0] not in {r[0] for r in first}]]


def request(spec: dict, guide: str | None, seed: int) -> SamplingRequest:
    g = Guidance(cfg=spec.get("cfg", 0.0), autoguide=guide or "none", autoguide_scale=spec.get("w", 2.0),
                 interval=spec.get("interval"))
    return SamplingRequest(sampler=spec["sampler"], steps=spec["steps"], seed=seed, guidance=g, classes=spec.get("classes"))


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


def class_agreement(reference, images, labels: np.ndarray) -> dict:
    """The share of the images drawn (or held out) as class `labels` that the run's classifier (the own-feature
    conv classifier) assigns to that class, overall and for the class it agrees with least, and the mean
    probability it gives the asked class (which does not saturate at 1 as soon as the agreement does)."""
    probs = reference.extractor.predict_proba(images)
    predicted = probs.argmax(1)
    per_class = [float((predicted[labels == c] == c).mean()) for c in np.unique(labels)]
    return {"agreement": float((predicted == labels).mean()), "agreement_worst_class": min(per_class),
            "class_probability": float(probs[np.arange(len(labels)), labels].mean())}


def mean_sd(values: list[float]) -> str:
    return f"{statistics.mean(values):.3f}" + (f" ± {statistics.stdev(values):.3f}" if len(values) > 1 else "")


def table_of(lines: list[dict], agreements: list[float] | None = None) -> None:
    """The markdown table of every row in `lines`: mean ± sd over the runs that measured it; the
    conditional runs (those with class agreement) in a table of their own, followed by the
    comparison at equal class agreement."""
    conditional = {line["run"] for line in lines if "agreement" in line}
    cols = ("FD", "P", "R", "FD180", "P180", "R180")
    plain = [line for line in lines if line["run"] not in conditional]
    groups = [(plain, cols)] if plain or not conditional else []
    if conditional:
        groups.append(([line for line in lines if line["run"] in conditional], ("agreement", *cols)))
    for group, columns in groups:
        results: dict[str, list[dict]] = {}
        for line in group:
            results.setdefault(line["row"], []).append(line)
        real = results.pop("real", [])
        runs = sorted({line["run"] for line in group})
        print(f"\n{len(runs)} training seeds ({', '.join(runs)}); mean ± sd over training seeds\n")
        print("| row | seeds | network passes | " + " | ".join(columns) + " |")
        print("| --- | ---: | ---: | " + " | ".join("---:" for _ in columns) + " |")
        for label, found in [("real", real), *results.items()]:
            name = "held-out real digits (180): the real-data level" if label == "real" else label
            cells = ["" if label == "real" and c in ("FD", "P", "R") else mean_sd([f[c] for f in found]) for c in columns]
            passes_cell = "" if label == "real" else str(found[0]["passes"])
            print(f"| {name} | {len(found)} | {passes_cell} | " + " | ".join(cells) + " |")
        if columns == cols:
            print(f"\n{OLD_DEFAULT}")
        else:
            equal_agreement(group, agreements)


def families(rows: dict[str, dict]) -> dict[str, list[tuple[float, dict]]]:
    """One run's conditional rows as curves (scale, row) in the order their scale grows, each from
    where its guidance is off: CFG w from 0 (no guidance), autoguidance W from 1 (no guidance),
    both: CFG w from 0 on top of autoguidance at W = 2."""
    none, base_both = rows.get(COND_NONE), rows.get(auto_label(2.0))
    curves = {"CFG": [(0.0, none)] if none else [], "autoguidance": [(1.0, none)] if none else [],
              "both (autoguidance W=2 + CFG)": [(0.0, base_both)] if base_both else []}
    for label, row in rows.items():
        if label.startswith(CFG):
            curves["CFG"].append((row["cfg"], row))
        elif label.startswith(AUTO):
            curves["autoguidance"].append((row["W"], row))
        elif label.startswith(BOTH):
            curves["both (autoguidance W=2 + CFG)"].append((row["cfg"], row))
    return {name: sorted(curve, key=lambda point: point[0]) for name, curve in curves.items()}


def at_agreement(curve: list[tuple[float, dict]], target: float, keys: tuple[str, ...]) -> dict | None:
    """The scale and `keys` interpolated linearly between the first two neighbouring points of the
    curve whose class agreement brackets `target`; None where the curve does not reach it."""
    for (s0, a), (s1, b) in zip(curve, curve[1:]):
        if a["agreement"] == target:
            return {"scale": s0, **{k: a[k] for k in keys}}
        if (a["agreement"] - target) * (b["agreement"] - target) < 0:
            f = (target - a["agreement"]) / (b["agreement"] - a["agreement"])
            return {"scale": s0 + f * (s1 - s0), **{k: a[k] + f * (b[k] - a[k]) for k in keys}}
    if curve and curve[-1][1]["agreement"] == target:
        return {"scale": curve[-1][0], **{k: curve[-1][1][k] for k in keys}}
    return None


def equal_agreement(lines: list[dict], levels: list[float] | None = None) -> None:
    """FD, P, R, P180, R180 of CFG, autoguidance and both where each reaches the same class agreement,
    interpolated per run along each family's scales; mean ± sd over the runs that reach it with the
    family's guidance on (not at its first point, where "both" is autoguidance alone). `levels`:
    the agreements (None: four evenly from the unguided agreement up to the highest that two families
    reach on every run)."""
    runs: dict[str, dict[str, dict]] = {}
    for line in lines:
        if line["row"] != "real":
            runs.setdefault(line["run"], {})[line["row"]] = line
    curves = {run: families(rows) for run, rows in runs.items()}
    names = ("CFG", "autoguidance", "both (autoguidance W=2 + CFG)")
    if levels is None:
        reached = {name: [[row["agreement"] for _, row in c[name]] for c in curves.values()] for name in names}
        if any(len(r) < 2 for r in reached["CFG"]):
            return
        lo = max(r[0] for r in reached["CFG"])  # the unguided agreement
        tops = sorted((min(max(r) for r in reached[name]) for name in names if all(len(r) > 1 for r in reached[name])),
                      reverse=True)
        if len(tops) < 2 or tops[1] <= lo:
            print("\nno class agreement above the unguided one is reached by two kinds of guidance on every run")
            return
        levels = [float(v) for v in np.linspace(lo, np.floor(tops[1] * 1000) / 1000, 5)[1:]]
    keys = ("FD", "P", "R", "P180", "R180")
    print("\nAt equal class agreement (interpolated along each family's scales, per run; mean ± sd over the runs that reach it)\n")
    print("| class agreement | guidance | its scale | runs | " + " | ".join(keys) + " |")
    print("| ---: | --- | ---: | ---: | " + " | ".join("---:" for _ in keys) + " |")
    for target in levels:
        for name in names:
            points = [p for c in curves.values() if (p := at_agreement(c[name], target, keys)) is not None
                      and p["scale"] != c[name][0][0]]  # at its first point the family adds nothing (both: autoguidance alone)
            if points:
                scale = ("W " if name == "autoguidance" else "w ") + mean_sd([p["scale"] for p in points])
                print(f"| {target:.3f} | {name} | {scale} | {len(points)} | "
                      + " | ".join(mean_sd([p[k] for p in points]) for k in keys) + " |")


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
    p.add_argument("--cfg", default="0.1,0.25,0.5,1,2,3", help="conditional runs: classifier-free guidance w (0: the conditional model)")
    p.add_argument("--cond-scales", default="1.5,2,2.5,3", help="conditional runs: autoguidance W by the run's kept guide (auto)")
    p.add_argument("--both", default="0.5,1,2", help="conditional runs: CFG w on top of autoguidance at W = 2")
    p.add_argument("--agreements", default="", help="conditional runs: the class agreements to compare the guidances at "
                   "(default: four from the unguided agreement up)")
    p.add_argument("--quick", action="store_true", help="smoke run: 200 samples, the first two rows")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    floats = lambda text: [float(v) for v in text.split(",") if v]  # noqa: E731
    table = rows([int(g) for g in args.guides.split(",")], floats(args.scales), tuple(floats(args.interval)))
    cond_table = conditional_rows(floats(args.cfg), floats(args.cond_scales), floats(args.both))
    if args.quick:
        args.num_samples, table, cond_table = 200, table[:2], cond_table[:2]
    skip = [s for s in args.skip.split(";") if s]
    done = [json.loads(line) for line in args.out.read_text().splitlines()] if args.out.is_file() else []
    for run_dir in [r for r in args.runs.split(",") if r and not args.table]:
        name = run_dir if args.main_step is None else f"{run_dir}@{args.main_step}"
        measured = {line["row"] for line in done if line["run"] == name}
        weights = "ema" if args.main_step is None else str(step_dir(Path(run_dir), args.main_step) / "ema.safetensors")
        run = load_run(Path(run_dir), weights)
        reference = image_reference(run, "own", report=print)
        conditional = run.config.conditional
        todo = [("real", None, None)] + [row for row in (cond_table if conditional else table)
                                         if not any(row[0].startswith(s) for s in skip)]
        guides = {}
        for label, guide, spec in todo:
            if label in measured:
                continue
            t0 = time.perf_counter()
            if label == "real":
                heldout = run.modality.load_heldout()
                scores = measure(reference, reference.extractor.features(heldout.images_uint8))
                if conditional:
                    scores.update(class_agreement(reference, heldout.images_uint8, heldout.labels.numpy()))
            else:
                if guide is not None and guide not in guides:
                    guides[guide] = load_guide(run, guide)
                sampled = guides[guide] if guide is not None else run
                r = request(spec, guide, args.seed)
                samples = draw(sampled, args.num_samples, r)
                images = nhwc_to_nchw(samples.data)
                scores = measure(reference, reference.extractor.features(images))
                scores["passes"] = sum(passes(sampled, r))
                if conditional:
                    scores.update(class_agreement(reference, images, samples.labels.numpy()),
                                  cfg=spec.get("cfg", 0.0), W=spec.get("w", 1.0) if guide else 1.0)
            line = {"run": name, "row": label, **scores, "seconds": round(time.perf_counter() - t0, 1),
                    "num_samples": args.num_samples}
            done.append(line)
            with args.out.open("a") as f:
                f.write(json.dumps(line) + "\n")
            print(json.dumps(line), flush=True)
    table_of([line for line in done if args.only in line["run"]] if args.only else done, floats(args.agreements) or None)


if __name__ == "__main__":
    main()
