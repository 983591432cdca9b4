"""The pictures and numbers of docs/editing.md: SDEdit, RePaint, interpolation and per-image
scores on the default digits run, every one made by the ddpmkit command it prints.

Inputs are the run's HELD-OUT digits (never trained on): 8 of them with 15% of their pixels set
to white for `edit`, the same 8 with the bottom half masked for `inpaint`, two of them for
`interpolate`, and for `score` 16 held-out digits, 16 training digits, 16 other held-out digits
inverted, 16 images of uniform noise and 4 blank (black) images, against all 180 held-out digits.

    python benchmarks/editing_digits.py --run /work/runs/digits-default      # ~15 min on 2 CPU cores
    python benchmarks/editing_digits.py --run RUN --quick                      # a smoke run: few steps
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import time
from pathlib import Path

import numpy as np
from PIL import Image

from ddpmkit import pictures
from ddpmkit.build import load_run
from ddpmkit.cli import main as ddpmkit


WEIGHTS: list[str] = []  # --weights W of every command, when not the default


def run(argv: list[str]) -> None:
    """One ddpmkit command, printed as a user types it."""
    argv = [*argv, *WEIGHTS]
    print("$ ddpmkit " + " ".join(shlex.quote(a) for a in argv), flush=True)
    started = time.perf_counter()
    assert ddpmkit(argv) == 0, argv
    print(f"  ({time.perf_counter() - started:.0f} s)\n", flush=True)


def save_pngs(images: np.ndarray, folder: Path) -> list[Path]:
    """uint8 [N, H, W, 1] as folder/0.png, 1.png, ..."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, image in enumerate(images):
        paths.append(folder / f"{i}.png")
        Image.fromarray(image[..., 0]).save(paths[-1])
    return paths


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", type=Path, required=True, help="a trained default digits run")
    p.add_argument("--work", type=Path, default=Path("/tmp/editing-digits"), help="inputs and command outputs")
    p.add_argument("--docs", type=Path, default=Path("docs/img"), help="where the pictures of the page go")
    p.add_argument("--weights", default="ema", help="--weights of every command (a run still training: a checkpoint's)")
    p.add_argument("--quick", action="store_true", help="few steps: checks the script, not the numbers")
    args = p.parse_args()
    if args.weights != "ema":
        WEIGHTS.extend(["--weights", args.weights])
    work, R = args.work, str(args.run)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    args.docs.mkdir(parents=True, exist_ok=True)
    steps = ["--steps", "20"] if args.quick else []

    held = load_run(args.run).modality.load_heldout()
    heldout = held.batch(range(len(held)))[0].permute(0, 2, 3, 1).numpy()  # [180, 8, 8, 1] uint8, never trained on
    rng = np.random.default_rng(0)
    chosen = heldout[[0, 1, 2, 3, 4, 5, 6, 7]]

    # ---- SDEdit: corrupted digits at three strengths ----
    corrupted = chosen.copy()
    corrupted[rng.random(corrupted.shape) < 0.15] = 255
    save_pngs(corrupted, work / "corrupted")
    strengths = ["0.3", "0.5", "0.7"]
    for s in strengths:
        run(["edit", "--run", R, "--input", str(work / "corrupted"), "--strength", s, "--sampler", "ddpm", "--seed", "0",
             "--out", str(work / f"edit-{s}"), *steps])
    rows = [("corrupted\ninput", corrupted)] + [(f"s = {s}", np.load(work / f"edit-{s}" / "samples.npy")) for s in strengths]
    pictures.image_rows(rows, [f"#{i}" for i in range(len(chosen))], args.docs / "editing-sdedit.png")

    # ---- RePaint: the bottom half filled in, without and with resampling ----
    save_pngs(chosen, work / "digits")
    mask = np.zeros((8, 8), np.uint8)
    mask[4:] = 255
    Image.fromarray(mask).save(work / "mask-bottom.png")
    grid = ["--steps", "20"] if args.quick else ["--steps", "250"]
    for r in ("1", "10"):
        run(["inpaint", "--run", R, "--input", str(work / "digits"), "--mask", str(work / "mask-bottom.png"),
             "--resample", r, "--jump", "10", *grid, "--seed", "0", "--out", str(work / f"inpaint-r{r}")])
    masked = chosen.copy()
    masked[:, 4:] = 128
    rows = [("input", chosen), ("kept\n(grey: fill)", masked), ("RePaint\nr = 1", np.load(work / "inpaint-r1" / "samples.npy")),
            ("RePaint\nr = 10\nj = 10", np.load(work / "inpaint-r10" / "samples.npy"))]
    pictures.image_rows(rows, [f"#{i}" for i in range(len(chosen))], args.docs / "editing-inpaint.png")
    shutil.copy(work / "inpaint-r10" / "inpaint.png", args.docs / "editing-inpaint-command.png")

    # ---- interpolation between two held-out digits ----
    ends = save_pngs(heldout[[2, 7]], work / "ends")
    run(["interpolate", "--run", R, "--a", str(ends[0]), "--b", str(ends[1]), "--frames", "8", *steps,
         "--out", str(work / "interpolate")])
    shutil.copy(work / "interpolate" / "interpolation.png", args.docs / "editing-interpolation.png")
    shutil.copy(work / "interpolate" / "interpolation.gif", args.docs / "editing-interpolation.gif")
    interp = json.loads((work / "interpolate" / "interpolation.json").read_text())
    run(["interpolate", "--run", R, "--a", str(ends[0]), "--b", str(ends[1]), "--frames", "8", "--steps", "50",
         "--out", str(work / "interpolate-50")])
    interp50 = json.loads((work / "interpolate-50" / "interpolation.json").read_text())

    # ---- scores: held-out, training, inverted, noise, blank ----
    train = load_run(args.run).modality.load(0)[0]
    groups = {
        "held-out digits": heldout[:16],
        "training digits": train.batch(range(16))[0].permute(0, 2, 3, 1).numpy(),
        "inverted held-out digits": 255 - heldout[16:32],
        "uniform noise": rng.integers(0, 256, (16, 8, 8, 1), dtype=np.uint8),
        "blank (black)": np.zeros((4, 8, 8, 1), np.uint8),
    }
    names = [g for g, images in groups.items() for _ in images]
    np.save(work / "to-score.npy", np.concatenate(list(groups.values())))
    run(["score", "--run", R, "--images", str(work / "to-score.npy"), "--out", str(work / "scores" / "scores.csv"),
         *(["--num-reference", "32"] if args.quick else [])])
    shutil.copy(work / "scores" / "scores.png", args.docs / "editing-scores.png")
    record = json.loads((work / "scores" / "scores.json").read_text())
    rows = [line.split(",") for line in (work / "scores" / "scores.csv").read_text().splitlines()[1:]]
    bpd = {int(r[1].split("[")[1].rstrip("]")): (float(r[2]), r[4]) for r in rows}

    # ---- the numbers of the page ----
    ref = record["reference"]
    print(f"reference: {ref['images']} ({ref['num']}), {ref['unit']}: median {ref['median']:.2f}, "
          f"5th percentile {ref['p5']:.2f}, 95th {ref['p95']:.2f}\n")
    print("| images | n | median bits/dim | range | flagged high | flagged low |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    start = 0
    for group, images in groups.items():
        values = [bpd[i][0] for i in range(start, start + len(images))]
        flags = [bpd[i][1] for i in range(start, start + len(images))]
        print(f"| {group} | {len(images)} | {np.median(values):.2f} | {min(values):.2f} – {max(values):.2f} | "
              f"{flags.count('high')} | {flags.count('low')} |")
        start += len(images)
    print()
    for done in (interp, interp50):
        e = done["reconstruction_error"]
        print(f"interpolation: {done['steps']} DDIM steps each way; endpoint reconstruction error (8-bit levels): "
              f"a max {e['a']['max']}, mean {e['a']['mean']:.3f}; b max {e['b']['max']}, mean {e['b']['mean']:.3f}")
    for r in ("1", "10"):
        rec = json.loads((work / f"inpaint-r{r}" / "inpaint.json").read_text())
        print(f"inpaint r = {r}: {rec['nfe']} network evaluations per image ({rec['steps']} steps)")
    assert len(names) == len(bpd)


if __name__ == "__main__":
    main()
