"""`ddpmkit sample` and `ddpmkit show-forward`: their options and the calls of the API."""

from __future__ import annotations

import time
from pathlib import Path

from ..build import load_run, modality
from ..rundir import DISTILL
from ..sampling import off_grid_note
from ..config import RunConfig
from ..data.images import parse_image_size
from ..errors import UserError, check_positive
from ..schedules import SPACINGS
from .options import DEVICE_HELP, add_weights, command, weights_from_args


def add_sample(sub) -> None:
    """draw samples from a trained run

    Draw samples from a run: SDIR/samples.npy (2-D: float [N, 2] in data space; images: uint8 [N, H,
    W, C]) and SDIR/samples.png. For 2-D data also prints the distance to fresh data.
    """
    p = command(sub, "sample", add_sample, run=True)
    p.add_argument("-n", "--num-samples", type=int, default=64, help="how many samples")
    p.add_argument("--out", type=Path, help="output directory (default: RUN/samples)")
    p.add_argument("--seed", type=int, default=0, help="seed of the sampling noise")
    add_weights(p)
    p.add_argument("--sampler", help="ddpm (ancestral), ddim, dpm++ (DPM-Solver++ 2M, the ODE), dpm++sde (SDE-DPM-Solver++ "
                   "2M) or heun (default: dpm++sde on 20 steps, which scores as well as 1,000 ddpm steps at 50x fewer network "
                   "calls; a distilled run: ddim on its own grid)")
    p.add_argument("--steps", type=int, help="sampling steps out of the trained T (default: 20 for dpm++sde when no "
                   "--sampler is given, a distilled run's own, else all T; --sampler ddpm alone is the 1,000-step ancestral sampler)")
    p.add_argument("--spacing", choices=SPACINGS, default="linspace", help="which --steps timesteps: linspace (evenly "
                   "from T-1 to 0), leading (0, k, 2k, ...: DDIM's), trailing (T-1, T-1-k, ...: Lin et al. 2024)")
    p.add_argument("--eta", type=float, help="ddim only: 0 deterministic, 1 ancestral-like (default 0)")
    p.add_argument("--clip", choices=["static", "dynamic", "none"], help="keep x̂_0 in [-1, 1]: static clipping, "
                   "dynamic thresholding (Imagen) or none (default: static for images, none for 2-D data)")
    p.add_argument("--dynamic-threshold", type=float, default=0.995, metavar="P",
                   help="percentile of |x̂_0| for --clip dynamic (default 0.995)")
    p.add_argument("--class", dest="class_", metavar="K|all", help="conditional runs: draw class K, or 'all' (-n per class, a grid row each)")
    p.add_argument("--guidance", type=float, default=0.0, help="classifier-free guidance strength w: ε = (1+w)·ε(x,c) − "
                   "w·ε(x,∅); 0 is the conditional model, -1 the unconditional one, below -1 anti-guidance (away from the class)")
    p.add_argument("--png-dir", type=Path, metavar="DIR", help="also write each sample as DIR/000000.png, ... (and "
                   "labels.csv for labelled samples): the folder clean-fid, torch-fidelity and pytorch-fid read")
    p.add_argument("--gif", action="store_true", help="also write reverse.gif: the reverse process (images: x_t beside x̂_0)")
    p.add_argument("--device", help=DEVICE_HELP)


def add_show_forward(sub) -> None:
    """draw the forward (noising) process on a few images

    Draw q(x_t | x_0) at ten values of t on a few images, linear and cosine schedules side by side.
    """
    p = command(sub, "show-forward", add_show_forward)
    p.add_argument("--data", default="digits", help="digits, a folder of images, a .npy/.npz file, or hf:NAME")
    p.add_argument("--out", type=Path, default=Path("forward.png"), help="PNG file to write")
    p.add_argument("--image-size", help="SIZE or HEIGHTxWIDTH (folders of mixed sizes need it)")
    p.add_argument("--channels", type=int, help="1, 2, 3 or 4 (default from the data)")
    p.add_argument("--num-images", type=int, default=4, help="how many images (rows per schedule)")
    p.add_argument("--timesteps", type=int, default=1000, help="T of both schedules")


def run_sample(args) -> int:
    from ..api import sample

    out = args.out or args.run / "samples"
    started = time.perf_counter()
    options = {}
    if args.eta is not None:
        if args.sampler != "ddim":
            raise UserError(f"--eta applies to --sampler ddim only, not {args.sampler or 'the default dpm++sde'}")
        options["eta"] = args.eta
    points = sample(args.run, args.num_samples, out, seed=args.seed, weights=weights_from_args(args), device=args.device, gif=args.gif,
                    class_=args.class_, guidance=args.guidance, sampler=args.sampler, steps=args.steps, spacing=args.spacing,
                    clip=args.clip, percentile=args.dynamic_threshold, png_dir=args.png_dir, **options)
    note = off_grid_note(load_run(args.run), args.sampler or "ddim", args.steps) if (args.run / DISTILL).is_file() else None
    if note:
        print(note)
    gif = " and reverse.gif" if args.gif else ""
    pngs = f"; {len(points)} PNG files in {args.png_dir}/" if args.png_dir else ""
    print(f"wrote {len(points)} samples to {out}/samples.npy, samples.png{gif}{pngs} in {time.perf_counter() - started:.1f} s")
    config = RunConfig.load(args.run / "config.json")
    summary = modality(config).sample_summary(config, points)
    if summary:
        print(summary)
    return 0


def run_show_forward(args) -> int:
    from ..api import show_forward

    check_positive("--num-images", args.num_images)
    check_positive("--timesteps", args.timesteps)
    show_forward(args.data, args.out, image_size=parse_image_size(args.image_size), channels=args.channels,
                 num_images=args.num_images, T=args.timesteps)
    print(f"wrote {args.out}")
    return 0
