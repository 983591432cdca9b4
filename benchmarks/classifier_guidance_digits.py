"""Classifier guidance on the default (unconditional) digits run: how often the asked class is drawn.

Copies a trained digits run (config.json and ema.safetensors; default /work/runs/digits-default,
`ddpmkit train` with the current defaults) to --out, trains its noise-aware classifier there
with the `ddpmkit train-classifier` defaults (api.train_classifier) and prints its accuracy on
the run's 180 held-out digits at t = 0, T/4, T/2, 3T/4. Then, for each classifier scale s, draws
`--per-class` samples of every class (`ddpmkit sample --class all --classifier-scale s`, dpm++sde
with 20 steps, seed 0) and asks a separately trained classifier (the run's own feature network of
`ddpmkit evaluate`: a plain conv classifier of clean digits, trained by ddpmkit on the run's
training digits, with its own held-out accuracy printed) which digit each sample is: the share
that agrees with the asked class, beside chance (1/10). Writes the class grid of `--grid-scale`
(one row per class) to --grid.

    python benchmarks/classifier_guidance_digits.py                   # ~3 min on a 2-core CPU
    python benchmarks/classifier_guidance_digits.py --run DIR --scales 0,2,4
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import numpy as np
import torch

from ddpmkit import api, build, classifier, rundir
from ddpmkit.data.images import to_model_space
from ddpmkit.features import train_own_features


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", type=Path, default=Path("/work/runs/digits-default"), help="a trained unconditional digits run")
    p.add_argument("--out", type=Path, default=Path("runs/bench-classifier-guidance"), help="where the copy of the run goes")
    p.add_argument("--scales", default="0,1,2,4,8", help="classifier scales s, comma-separated")
    p.add_argument("--per-class", type=int, default=50, help="samples of each class at each scale")
    p.add_argument("--sampler", default="dpm++sde")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--grid", type=Path, default=Path("docs/img/classifier-guidance-grid.png"), help="the class grid picture")
    p.add_argument("--grid-scale", type=float, default=4.0, help="the scale of the class grid")
    p.add_argument("--reuse-classifier", action="store_true", help="keep a classifier --out holds from an earlier call")
    p.add_argument("--classifier-only", action="store_true", help="train and measure the classifier, sample nothing")
    args = p.parse_args()
    scales = [float(s) for s in args.scales.split(",")]

    run_dir = args.out / "run"
    run_dir.mkdir(parents=True, exist_ok=True)
    for name in ("config.json", "ema.safetensors", "log.jsonl"):
        shutil.copy2(args.run / name, run_dir / name)
    config = build.run_config(run_dir)
    last = rundir.read_log(run_dir)[-1]["step"]
    print(f"run: {args.run} ({config.data.name}, T = {config.diffusion.num_steps}, conditional: {config.conditional}, "
          f"weights of the newest checkpoint; last logged step {last} of {config.train.steps})")

    if args.reuse_classifier and (run_dir / "classifier" / "accuracy.json").is_file():
        record = classifier.read_accuracy(run_dir)  # it depends on the data and the schedule only, not on the weights
        print("reusing the classifier trained before in", run_dir / "classifier")
    else:
        started = time.perf_counter()
        record = api.train_classifier(run_dir, report=print)
        print(f"train-classifier (defaults) in {time.perf_counter() - started:.0f} s")
    if args.classifier_only:
        return
    for line in classifier.format_accuracy(record):
        print(line)

    modality = build.modality(config)
    train_set, _ = modality.load(0)
    judge = train_own_features(train_set, {"name": config.data.name})
    print(f"judge: {judge.description} (held-out accuracy {judge.record['heldout_accuracy']:.3f})")

    rows = []
    for s in scales:
        started = time.perf_counter()
        out = args.out / f"scale-{s:g}"
        guided = api.SamplingRequest(classes="all", guidance=api.Guidance(classifier=s), sampler=args.sampler,
                                     steps=args.steps, seed=0)
        images = api.sample(run_dir, args.per_class, out, guided)
        seconds = time.perf_counter() - started
        labels = np.load(out / "labels.npy")
        with torch.no_grad():
            predicted = judge.net(to_model_space(torch.from_numpy(images).permute(0, 3, 1, 2))).argmax(1).numpy()
        per_class = [float((predicted[labels == k] == k).mean()) for k in range(int(labels.max()) + 1)]
        rows.append({"scale": s, "agreement": float((predicted == labels).mean()), "per_class": per_class,
                     "samples": len(labels), "seconds": round(seconds, 1)})
        if s == args.grid_scale:
            args.grid.parent.mkdir(parents=True, exist_ok=True)
            api.sample(run_dir, 10, args.out / "grid", guided)
            shutil.copy2(args.out / "grid" / "samples.png", args.grid)
            print(f"wrote {args.grid} (s = {s:g}, 10 per class)")

    print(f"\nagreement of the judge with the asked class ({args.per_class} per class, {args.sampler} {args.steps} steps; "
          "chance 0.100):")
    print(f"  {'s':>4}  {'agreement':>9}  {'worst class':>11}  {'s/sample':>8}")
    for r in rows:
        worst = int(np.argmin(r["per_class"]))
        print(f"  {r['scale']:>4g}  {r['agreement']:>9.3f}  {worst:>5} {r['per_class'][worst]:.2f}  "
              f"{r['seconds'] / r['samples']:>8.3f}")
    (args.out / "results.json").write_text(json.dumps({"classifier": record, "judge": judge.record, "rows": rows}, indent=2))
    print(f"wrote {args.out / 'results.json'}")


if __name__ == "__main__":
    main()
