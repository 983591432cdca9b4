"""`ddpmkit sample` and `ddpmkit show-forward`: their options and the calls of the API."""

from __future__ import annotations

import json
import time
from pathlib import Path

from ..data.images import parse_image_size
from ..errors import UserError, check_positive
from ..outputs import claim, inside, replaced_note
from ..rundir import SAMPLE_RECORD
from ..sampling import passes_note
from ..schedules import RANGED, SCHEDULES
from .options import DEVICE_HELP, add_overwrite, add_progress, add_sampling, command, data_help, ints, request_from_args


def add_sample(sub) -> None:
    """draw samples from a trained run

    Draw samples from a run: SDIR/samples.npy (2-D: float [N, 2] in data space; images: uint8 [N, H,
    W, C]) and SDIR/samples.png. For 2-D data also prints the distance to fresh data.
    """
    p = command(sub, "sample", add_sample, run=True)
    p.add_argument("-n", "--num-samples", type=int, default=64, help="how many samples")
    p.add_argument("--out", type=Path, help="output directory (default: RUN/samples)")
    add_sampling(p)
    p.add_argument("--png-dir", type=Path, metavar="DIR", help="also write each sample as DIR/000000.png, ... (and "
                   "labels.csv for labelled samples): the folder clean-fid, torch-fidelity and pytorch-fid read")
    p.add_argument("--gif", action="store_true", help="also write reverse.gif: the reverse process (images: x_t beside x̂_0)")
    p.add_argument("--strip", metavar="T,T,...", help="also write strip.png: for each sample (a row; use a small -n) its "
                   "state at these timesteps, e.g. 999,750,500,250,0 (a timestep the sampler's grid lacks: its nearest grid step)")
    p.add_argument("--strip-shows", choices=("xt", "x0"), default="xt", help="what strip.png shows at each timestep: "
                   "xt, the noisy state x_t the sampler holds, or x0, its prediction x̂_0 of the final image")
    add_overwrite(p)
    p.add_argument("--device", help=DEVICE_HELP)
    add_progress(p)


def add_show_forward(sub) -> None:
    """draw the forward (noising) process on a few images

    Draw q(x_t | x_0) at ten values of t on a few images, linear and cosine schedules side by side.
    """
    p = command(sub, "show-forward", add_show_forward)
    p.add_argument("--data", default="digits", help=data_help(images_only=True))
    p.add_argument("--out", type=Path, default=Path("forward.png"), help="PNG file to write")
    p.add_argument("--image-size", help="SIZE or HEIGHTxWIDTH (folders of mixed sizes need it)")
    p.add_argument("--channels", type=int, help="1, 2, 3 or 4 (default from the data)")
    p.add_argument("--num-images", type=int, default=4, help="how many images (rows per schedule)")
    p.add_argument("--timesteps", type=int, default=1000, help="T of both schedules")


def add_show_schedule(sub) -> None:
    """draw β_t, ᾱ_t and log-SNR of noise schedules

    Draw one or more β schedules side by side in one PNG of three panels: β_t (log scale), ᾱ_t and
    the log signal-to-noise ratio λ_t = log(ᾱ_t / (1 − ᾱ_t)), against t/T. Each schedule is a name, or
    NAME:BETA_START:BETA_END for a linear, quadratic or sigmoid schedule with its own ends.
    """
    p = command(sub, "show-schedule", add_show_schedule)
    p.add_argument("--schedule", default="linear,cosine", metavar="NAME[,NAME...]",
                   help=f"comma-separated schedules: {', '.join(SCHEDULES)}, each optionally NAME:START:END, e.g. "
                   "linear,cosine or linear:1e-4:0.02,sigmoid:1e-5:5e-3 (default linear,cosine)")
    p.add_argument("--timesteps", type=int, default=1000, help="T of every schedule")
    p.add_argument("--beta-start", type=float, help=f"β_1 of the {', '.join(RANGED)} schedules listed without their own ends "
                   "(default 1e-4 × 1000/T); the cosine schedule has none and is drawn as it is")
    p.add_argument("--beta-end", type=float, help="β_T of those schedules (default 0.02 × 1000/T)")
    p.add_argument("--out", type=Path, default=Path("schedules.png"), help="PNG file to write")


def _schedule_specs(text: str) -> list[tuple[str, float | None, float | None]]:
    """--schedule's value: (name, β_start or None, β_end or None) for each NAME or NAME:START:END."""
    specs = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        name, *ends = part.split(":")
        if len(ends) not in (0, 2):
            raise UserError(f"--schedule takes NAME or NAME:BETA_START:BETA_END, got {part!r}")
        try:
            start, end = (float(ends[0]), float(ends[1])) if ends else (None, None)
        except ValueError:
            raise UserError(f"--schedule {part!r}: the ends must be numbers, e.g. linear:1e-4:0.02") from None
        specs.append((name.strip(), start, end))
    if not specs:
        raise UserError("--schedule names at least one schedule, e.g. linear,cosine")
    return specs


def run_show_schedule(args) -> int:
    from ..api import show_schedule

    check_positive("--timesteps", args.timesteps)
    shown = show_schedule(_schedule_specs(args.schedule), args.out, T=args.timesteps, beta_start=args.beta_start,
                          beta_end=args.beta_end)
    print(f"wrote {args.out}: " + "; ".join(shown))
    return 0


def run_sample(args) -> int:
    from ..api import sample, sample_summary
    from ..pictures import SampleFiles

    out = args.out or args.run / "samples"
    started = time.perf_counter()
    request = request_from_args(args)
    strip = ints(args.strip, "--strip") if args.strip is not None else ()
    if args.strip is not None and not strip:
        raise UserError("--strip takes comma-separated timesteps such as 999,750,500,250,0")
    files = SampleFiles(gif=args.gif, png_dir=args.png_dir, strip=tuple(strip), strip_shows=args.strip_shows)
    target = claim(out, "sample", overwrite=args.overwrite)  # checked again by api.sample; here for the summary's word
    pngs = (claim(args.png_dir, "png-dir", "--png-dir", overwrite=args.overwrite)
            if args.png_dir and not inside(args.png_dir, target) else None)
    points = sample(args.run, args.num_samples, target, request, files, device=args.device, report=print)
    gif = (" and reverse.gif" if args.gif else "") + (", strip.png" if strip else "")
    replaced = "".join(replaced_note(o) for o in (target, pngs) if o is not None)
    pngs = f"; {len(points)} PNG files in {args.png_dir}/" if args.png_dir else ""
    print(f"wrote {len(points)} samples to {out}/samples.npy, samples.png{gif}{pngs} in {time.perf_counter() - started:.1f} s{replaced}")
    record = json.loads((out / SAMPLE_RECORD).read_text())["sampling"]
    if "classifier_scale" in record:
        print(f"classifier guidance s = {record['classifier_scale']:g}: per sample {record['nfe']} network evaluations = "
              f"{record['network_passes']} network passes and {record['classifier_passes']} classifier passes (a forward "
              "and a backward each)")
    guided = passes_note(record) if "autoguide" in record or "guidance_interval" in record else None
    if guided:
        print(guided)
    summary = sample_summary(args.run, points)
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
