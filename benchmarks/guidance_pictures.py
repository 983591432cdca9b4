"""The pictures of docs/guidance.md: the same noise with and without guidance, and moons before and after v.

Issue 31 item 6. Writes

- docs/img/guidance-digits.png: a conditional digits run (`ddpmkit train --conditional --seed 0
  --guide-at 0.5 --out DIGITS`, which keeps the step-475 EMA as DIGITS/guide.safetensors) sampled
  four times from the same noise (`--class all`, `--per-class` of each class, dpm++sde 20 steps,
  sampling seed 0): the conditional model alone, classifier-free guidance (`--guidance W`),
  autoguidance by the kept guide (`--autoguide auto --autoguide-scale W`) and both. One row per
  guidance, one column per class, each cell the same `--per-class` starting noises of that class.
- docs/img/guidance-moons.png: moons before and after the 2-D preset moved from ε- to
  v-prediction (docs/sampling.md, "Few steps on 2-D data"): an ε-prediction run (`ddpmkit train
  --data moons --prediction eps --seed 0 --out EPS`, the old default) and the default v-prediction
  run of the same seed (`ddpmkit train --data moons --seed 0 --out V`), each drawn with `sample`'s
  default dpm++sde and with DDIM at 20 steps from the same noise (sampling seed 0), in the
  normalised space the model sees, on the same axes, with the circle of radius 5 (twice the
  farthest real point) and each panel's share of points beyond it and off the plot.

    OMP_NUM_THREADS=1 python benchmarks/guidance_pictures.py --digits /work/bench/cond-0 \\
        --moons-eps /work/bench/moons-ag/eps-seed0 --moons-v /work/bench/moons-ag/v-seed0     # ~1 min
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from ddpmkit import api, build, checkpoint, rundir, viz
from ddpmkit.data.toy import normalise
from points_samplers import RADIUS, beyond_radius  # the outlier measure of the few-step benchmark


def digits_picture(run_dir: Path, path: Path, per_class: int, cfg: float, autoguide: float, sampler: str, steps: int) -> None:
    """One row per guidance, one column per class; each cell the class's `per_class` samples (same noise in every row)."""
    guide_step = checkpoint.weights_metadata(run_dir / rundir.GUIDE).get("step", "?")
    rows = [("no guidance", api.Guidance()),
            (f"classifier-free\nguidance w = {cfg:g}", api.Guidance(cfg=cfg)),
            (f"autoguidance W = {autoguide:g}\n(auto: the step-{guide_step}\nEMA)", api.Guidance(autoguide="auto", autoguide_scale=autoguide)),
            (f"both: w = {cfg:g},\nW = {autoguide:g}", api.Guidance(cfg=cfg, autoguide="auto", autoguide_scale=autoguide))]
    table, classes = [], None
    for label, guidance in rows:
        request = api.SamplingRequest(sampler=sampler, steps=steps, seed=0, classes="all", guidance=guidance)
        run = build.load_for(run_dir, request)
        samples = api.draw(run, per_class, request)
        classes = samples.labels.numpy()
        record = request.record(run)
        print(f"  {label.replace(chr(10), ' ')}: {record['network_passes']} network passes per sample"
              + (f"; guide {record['guide']}" if "guide" in record else ""))
        cells = []
        for k in range(run.classes):  # the class's samples stacked as one square-ish tile
            tile = viz.image_grid(samples.data[classes == k], rows=int(np.ceil(np.sqrt(per_class))), pad=1)
            cells.append(np.asarray(tile)[..., None] if tile.mode == "L" else np.asarray(tile))
        table.append(cells)
    viz.image_table(table, [label for label, _ in rows], [f"class {k}" for k in range(len(table[0]))], path)
    print(f"wrote {path} ({per_class} per class, {sampler} {steps} steps, seed 0)")


def moons_picture(eps_dir: Path, v_dir: Path, path: Path, n: int, limit: float) -> None:
    """ε against v, dpm++sde and DDIM at 20 steps, same noise, same axes; titles with the share beyond radius 5."""
    from matplotlib.patches import Circle

    frames, titles = [], []
    for name, run_dir in (("ε-prediction (old default)", eps_dir), ("v-prediction (default)", v_dir)):
        run = build.load_run(run_dir)
        for sampler in ("dpm++sde", "ddim"):
            x = normalise(api.draw(run, n, api.SamplingRequest(sampler=sampler, steps=20, seed=0)).data,
                          run.config.data.mean, run.config.data.scale)
            r = np.linalg.norm(x, axis=1)
            off = float((np.abs(x) > limit).any(axis=1).mean())
            frames.append(x)
            titles.append(f"{name}, {sampler} 20 steps: {beyond_radius(x):.1%} beyond r = {RADIUS:g}"
                          + (f" ({off:.1%} off the plot)" if off else ""))
            print(f"  {titles[-1]}; median radius {np.median(r):.2f}")
    fig = viz.scatter_strip(frames, titles, path, lims=((-limit, limit), (-limit, limit)))
    for ax in fig.axes:  # the radius the share counts
        ax.add_patch(Circle((0, 0), RADIUS, fill=False, ls="--", lw=0.8, color="0.4"))
    fig.savefig(path, dpi=110)
    print(f"wrote {path} ({n:,} points per panel, normalised space, axes ±{limit:g})")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--digits", type=Path, default=Path("/work/bench/cond-0"), help="a conditional digits run with guide.safetensors")
    p.add_argument("--moons-eps", type=Path, default=Path("/work/bench/moons-ag/eps-seed0"), help="an ε-prediction moons run")
    p.add_argument("--moons-v", type=Path, default=Path("/work/bench/moons-ag/v-seed0"), help="the default (v) moons run")
    p.add_argument("--per-class", type=int, default=4, help="digits of each class in each cell")
    p.add_argument("--cfg", type=float, default=2.0, help="classifier-free guidance w (the quick start's)")
    p.add_argument("--autoguide-scale", type=float, default=2.0, help="autoguidance W (docs/guidance.md's)")
    p.add_argument("--sampler", default="dpm++sde")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--points", type=int, default=2000, help="moons points per panel")
    p.add_argument("--limit", type=float, default=8.0, help="moons axes: ±limit in the normalised space")
    p.add_argument("--img", type=Path, default=Path("docs/img"))
    args = p.parse_args()
    torch.set_grad_enabled(False)
    args.img.mkdir(parents=True, exist_ok=True)
    digits_picture(args.digits, args.img / "guidance-digits.png", args.per_class, args.cfg, args.autoguide_scale,
                   args.sampler, args.steps)
    moons_picture(args.moons_eps, args.moons_v, args.img / "guidance-moons.png", args.points, args.limit)


if __name__ == "__main__":
    main()
