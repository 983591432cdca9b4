"""`ddpmkit edit`, `inpaint`, `interpolate` and `score`: a trained model applied to the user's own
images. Their options and the calls of the API."""

from __future__ import annotations

import time
from pathlib import Path

from ..outputs import claim, replaced_note
from .options import (EDIT, INPAINT, INTERPOLATE, DEVICE_HELP, add_overwrite, add_sampling, add_weights, command,
                      input_help, request_from_args, weights_from_args)

def add_edit(sub) -> None:
    """edit images with a trained run (SDEdit): noise them part of the way and denoise

    SDEdit (Meng et al. 2022): each input is noised to t = s·T and denoised from there by the
    sampler, so a rough or damaged image becomes one the model would draw, close to the input for
    small s. --strength 0 returns the input, 1 ignores it (a plain sample). Writes OUT/samples.npy,
    samples.png, edit.png (inputs above results) and edit.json.
    """
    p = command(sub, "edit", add_edit, run=True)
    p.add_argument("--input", required=True, type=Path, help=input_help())
    p.add_argument("--strength", type=float, default=0.5, help="s in [0, 1]: the share of the forward process the "
                   "input is noised through (0: unchanged, 1: a plain sample)")
    p.add_argument("--out", type=Path, help="output directory (default: RUN/edit)")
    add_sampling(p, EDIT)
    add_overwrite(p)
    p.add_argument("--device", help=DEVICE_HELP)


def add_inpaint(sub) -> None:
    """fill in the masked part of images with a trained run (RePaint)

    RePaint (Lugmayr et al. 2022): at every step the pixels kept are replaced by the input noised
    to that step, the rest is the model's reverse step; with --resample r each stretch of --jump j
    steps is noised again and redone r times in all, which harmonises the filled part with the
    kept one. The mask is an image of the input's size, white where the model fills in, black
    where the input is kept; the kept pixels of the result are the input's exactly. Writes
    OUT/samples.npy, samples.png, inpaint.png (input, mask, result) and inpaint.json.
    """
    p = command(sub, "inpaint", add_inpaint, run=True)
    p.add_argument("--input", required=True, type=Path, help=input_help())
    p.add_argument("--mask", required=True, type=Path, help="an image of the input's size: white = fill in, black = keep")
    p.add_argument("--resample", type=int, default=1, help="r: times each stretch of --jump steps is walked (1: no "
                   "resampling; RePaint used 10)")
    p.add_argument("--jump", type=int, default=1, help="j: length of the stretches noised again, in sampling steps "
                   "(RePaint used 10)")
    p.add_argument("--out", type=Path, help="output directory (default: RUN/inpaint)")
    add_sampling(p, INPAINT)
    add_overwrite(p)
    p.add_argument("--device", help=DEVICE_HELP)


def add_interpolate(sub) -> None:
    """interpolate between two images through their DDIM latents

    Both images are inverted to x_T by deterministic DDIM, the latents interpolated spherically
    (slerp), and every frame decoded by DDIM. Prints and records how closely the endpoints
    reconstruct the inputs (8-bit levels). Writes OUT/samples.npy (the frames), samples.png,
    interpolation.png (a, the frames, b), interpolation.gif and interpolation.json.
    """
    p = command(sub, "interpolate", add_interpolate, run=True)
    p.add_argument("--a", required=True, type=Path, help="the first image (an image file; fitted like the training data)")
    p.add_argument("--b", required=True, type=Path, help="the last image")
    p.add_argument("--frames", type=int, default=8, help="frames from a to b, both ends included")
    p.add_argument("--out", type=Path, help="output directory (default: RUN/interpolate)")
    add_sampling(p, INTERPOLATE)
    add_overwrite(p)
    p.add_argument("--device", help=DEVICE_HELP)


def add_score(sub) -> None:
    """score images by the run's likelihood (bits/dim) against its held-out images

    Bits/dim of each image under the model (--nll vlb: the variational bound, all T terms; ode:
    the probability-flow ODE's likelihood), beside the same score of the run's held-out images:
    their median and 5th/95th percentiles are printed and written, and each image outside that
    range is flagged (high: unlike the training data; low: unusually simple). Writes OUT (a .csv,
    worst first) and beside it OUT.json, OUT.png and OUT.npy (the images as scored, in that order).
    """
    p = command(sub, "score", add_score, run=True)
    p.add_argument("--images", required=True, type=Path, help=input_help())
    p.add_argument("--out", type=Path, default=Path("scores.csv"), help="the .csv file of the scores")
    p.add_argument("--nll", choices=["vlb", "ode"], default="vlb", help="which likelihood")
    p.add_argument("--num-reference", type=int, default=256, help="held-out images scored as the reference")
    p.add_argument("--ode-points", type=int, default=100, help="--nll ode: timesteps asked for on the ODE grid")
    p.add_argument("--seed", type=int, default=0, help="seed of the noise in each bound term (and of the ODE's "
                   "dequantisation and trace estimate)")
    add_weights(p)
    p.add_argument("--device", help=DEVICE_HELP)


def _wrote(out, files: list[Path], started: float) -> str:
    return (f"wrote {out.path}/" + ", ".join(f.name for f in files) + f" in {time.perf_counter() - started:.1f} s"
            + replaced_note(out))


def run_edit(args) -> int:
    from ..api import edit

    out = claim(args.out or args.run / "edit", "edit", overwrite=args.overwrite)
    started = time.perf_counter()
    done = edit(args.run, args.input, out, args.strength, request_from_args(args, EDIT), device=args.device)
    r = done.record
    print(f"read {len(r['inputs'])} image(s) from {args.input}: {r['fitted']}")
    where = (f"from t = {r['start_timestep']} of T = {r['trained_steps_T']}, {r['steps']} {r['sampling']['sampler']} steps"
             if r["steps"] else "no noise: the inputs")
    print(f"SDEdit at strength {args.strength:g} ({where}); {_wrote(out, done.files, started)}")
    return 0


def run_inpaint(args) -> int:
    from ..api import inpaint

    out = claim(args.out or args.run / "inpaint", "inpaint", overwrite=args.overwrite)
    started = time.perf_counter()
    done = inpaint(args.run, args.input, args.mask, out, request_from_args(args, INPAINT), resample=args.resample, jump=args.jump,
                   device=args.device)
    r = done.record
    print(f"read {len(r['inputs'])} image(s) from {args.input} and the mask {args.mask}: {r['fitted']}; "
          f"{r['filled_pixels']} of {r['pixels']} pixels filled in")
    print(f"RePaint, {r['steps']} {r['sampling']['sampler']} steps, resample {r['resample']}, jump {r['jump']}: {r['nfe']} network "
          f"evaluations per image; {_wrote(out, done.files, started)}")
    return 0


def run_interpolate(args) -> int:
    from ..api import interpolate

    out = claim(args.out or args.run / "interpolate", "interpolate", overwrite=args.overwrite)
    started = time.perf_counter()
    done = interpolate(args.run, args.a, args.b, out, args.frames, request_from_args(args, INTERPOLATE), device=args.device)
    r = done.record
    e = r["reconstruction_error"]
    print(f"read {args.a} and {args.b}: {r['fitted']}")
    print(f"endpoint reconstruction error (8-bit levels): a max {e['a']['max']}, mean {e['a']['mean']:.2f}; "
          f"b max {e['b']['max']}, mean {e['b']['mean']:.2f} ({r['steps']} DDIM steps each way)")
    print(f"{r['frames']} frames; {_wrote(out, done.files, started)}")
    return 0


def run_score(args) -> int:
    from ..api import score
    from ..evaluation.scores import ScoreSettings

    started = time.perf_counter()
    settings = ScoreSettings(kind=args.nll, num_reference=args.num_reference, seed=args.seed, ode_points=args.ode_points,
                             weights=weights_from_args(args))
    scores = score(args.run, args.images, args.out, settings, device=args.device)
    ref = scores.reference
    print(f"held-out reference ({ref['num']} images, {ref['unit']}): median {ref['median']:.3f}, "
          f"5th percentile {ref['p5']:.3f}, 95th {ref['p95']:.3f}")
    high, low = scores.flags.count("high"), scores.flags.count("low")
    print(f"{len(scores.names)} images scored, worst first: {high} above the 95th percentile (high), {low} below the "
          f"5th (low)")
    for name, v, flag in list(zip(scores.names, scores.bpd, scores.flags))[:5]:
        print(f"  {v:8.3f}  {name}{'  ' + flag if flag else ''}")
    stem = args.out.with_suffix("")
    print(f"wrote {args.out}, {stem}.json, {stem}.png and {stem}.npy in {time.perf_counter() - started:.1f} s")
    return 0
