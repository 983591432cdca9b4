"""`ddpmkit evaluate` and `ddpmkit compare-samplers`: their options and the calls of the API."""

from __future__ import annotations

import time
from pathlib import Path

from ..errors import UserError, check_positive
from ..evaluation import QualitySettings, format_report
from ..evaluation.nll import check_ode_points
from ..samplers import SAMPLERS
from ..evaluation.reference import is_reference_file
from ..outputs import claim, claim_file, replaced_note
from .options import (COMPARE, DEVICE_HELP, EVALUATE, add_overwrite, add_sampling, command, ints, request_from_args, sampling_given,
                      weights_from_args)


def add_evaluate(sub) -> None:
    """measure a trained run: sample quality (FID/KID, precision/recall, copies) or likelihood

    Measure a run and add the result to RUN/metrics.json. By default: sample quality. Images:
    Fréchet distance and KID to the run's data in a feature space (--features own: a small
    classifier ddpmkit trains on the run's data and keeps in RUN/features/; --features inception:
    FID's Inception-v3 from weights you supply), improved precision and recall (k = 3), and the
    share of samples that are near-copies of training images (picture: RUN/eval/closest_pairs.png).
    2-D runs: MMD² and sliced Wasserstein to fresh points. Every number is printed with its sample
    count, sampler and network evaluations, features and reference set. With --nll it measures the
    likelihood instead: vlb, the full variational bound in bits/dim; ode, the exact likelihood of
    the probability-flow ODE; both, side by side.
    """
    p = command(sub, "evaluate", add_evaluate, run=True)
    g = p.add_argument_group("sample quality (the default)")
    g.add_argument("-n", "--num-samples", type=int, help=f"samples to draw and measure (default {QualitySettings.num})")
    g.add_argument("--features", help="images: own (ddpmkit's features for this data, the default) or inception (standard FID)")
    g.add_argument("--inception-weights", type=Path, metavar="PATH",
                   help="pt_inception-2015-12-05-6726825d.pth (pytorch-fid); default: look in torch hub's checkpoints cache")
    g.add_argument("--ref", type=Path, metavar="FILE.npz", help="images: measure the Fréchet distance against the mu and "
                   "sigma of this file (ddpmkit --save-ref, pytorch-fid --save-stats, EDM's fid.py ref) instead of the run's data")
    g = p.add_argument_group("reference statistics instead")
    g.add_argument("--save-ref", type=Path, metavar="FILE.npz", help="write the run's real-data statistics in --features "
                   "(mu, sigma and the extractor's identity, the layout pytorch-fid and EDM read) and measure nothing")
    add_overwrite(g)
    g = p.add_argument_group("likelihood instead")
    g.add_argument("--nll", choices=["vlb", "ode", "both"], help="measure the NLL in bits/dim instead of sample quality")
    g.add_argument("--ode-points", type=int, default=100, help="--nll ode: timesteps asked for on the ODE grid, evenly "
                   "spread in log-SNR; repeats are dropped, so fewer may be used (printed); 2 network passes each")
    g.add_argument("--num-images", type=int, default=256, help="--nll: examples the likelihood is averaged over")
    add_sampling(p, EVALUATE)  # --seed and --weights serve --nll too
    p.add_argument("--device", help=DEVICE_HELP)


def add_compare(sub) -> None:
    """sample with every sampler at several step counts and compare quality and time

    Trains nothing: samples a run with each sampler at each step count, measures quality (2-D: MMD
    and sliced Wasserstein to fresh points; images: the Fréchet distance in the run's own features,
    see ddpmkit evaluate), network evaluations and wall time per sample; writes compare.json and
    compare.png.
    """
    p = command(sub, "compare-samplers", add_compare, run=True)
    p.add_argument("--samplers", default=None, help="comma-separated (default: all)")
    p.add_argument("--steps", default="10,20,50,100,1000", help="comma-separated sampling step counts; those above "
                   "the run's T are skipped with a note")
    p.add_argument("-n", "--num-samples", type=int, default=500, help="samples per setting")
    p.add_argument("--out", type=Path, help="output directory (default: RUN/compare)")
    add_sampling(p, COMPARE)
    add_overwrite(p)
    p.add_argument("--device", help=DEVICE_HELP)


QUALITY_OPTIONS = ("num_samples", "features", "inception_weights", "ref")  # besides the sampling options
KEPT = ("--seed", "--weights", "--ema")  # the sampling options that --nll and --save-ref take too (or ignore)


def run_evaluate(args) -> int:
    from ..api import evaluate

    if args.save_ref is not None:
        return _run_save_ref(args)
    if args.nll is not None:
        given = [o for o in sampling_given(args, EVALUATE) if o not in KEPT] + [f"--{o.replace('_', '-')}" for o in QUALITY_OPTIONS
                                                                      if getattr(args, o) is not None]
        if given:
            raise UserError(f"--nll measures the likelihood only; drop {', '.join(given)} (or drop --nll to measure sample quality)")
        return _run_nll(args)
    given = {"num": args.num_samples, "features": args.features, "inception_weights": args.inception_weights, "ref": args.ref}
    settings = QualitySettings(**{k: v for k, v in given.items() if v is not None})
    started = time.perf_counter()
    record = evaluate(args.run, request_from_args(args, EVALUATE), settings, device=args.device, report=print)
    print(f"sample quality of {args.run}:")
    for line in format_report(record):
        print(line)
    picture = f" and {record['memorisation']['picture']}" if "memorisation" in record else ""
    print(f"{time.perf_counter() - started:.1f} s; written to {args.run}/metrics.json (sample_quality){picture}")
    return 0


def _run_save_ref(args) -> int:
    from ..api import save_reference

    given = [o for o in sampling_given(args, EVALUATE) if o not in KEPT] + [f"--{o.replace('_', '-')}" for o in ("num_samples", "ref", "nll")
                                                                  if getattr(args, o) is not None]
    if given:
        raise UserError(f"--save-ref writes the reference and measures nothing; drop {', '.join(given)}")
    if args.save_ref.suffix != ".npz":
        raise UserError(f"--save-ref writes a .npz file; give a name ending in .npz, not {args.save_ref.name!r}")
    replaces = claim_file(args.save_ref, "--save-ref", is_reference_file, overwrite=args.overwrite)
    described = save_reference(args.run, args.save_ref, features=args.features or "own", inception_weights=args.inception_weights,
                               device=args.device, report=print, overwrite=args.overwrite)
    print(f"wrote {args.save_ref}: mu and sigma of {described['what']}" + (" (replacing the earlier reference)" if replaces else ""))
    return 0


def _run_nll(args) -> int:
    from ..api import likelihood

    check_positive("--num-images", args.num_images)
    check_ode_points(args.ode_points)
    started = time.perf_counter()
    titles = {"vlb": "variational bound, {} terms", "ode": "probability-flow ODE, {} distinct timesteps of "
              f"{args.ode_points} asked for"}
    kinds = ("vlb", "ode") if args.nll == "both" else (args.nll,)
    results = likelihood(args.run, kinds, num=args.num_images, seed=args.seed or 0, ode_points=args.ode_points,
                         weights=weights_from_args(args), device=args.device)
    for kind, result in zip(kinds, results):
        print(f"NLL ({titles[kind].format(result[f'nll_{kind}_steps'])}): {result[f'nll_{kind}_bpd']:.4f} "
              f"± {result[f'nll_{kind}_stderr']:.4f} {result[f'nll_{kind}_unit']}")
    print(f"  on {result[f'nll_{kind}_reference']}; {time.perf_counter() - started:.1f} s; written to {args.run}/metrics.json")
    return 0


def run_compare(args) -> int:
    from ..api import compare

    if args.num_samples <= 1:
        raise UserError(f"-n must be at least 2, got {args.num_samples}")
    samplers = args.samplers.split(",") if args.samplers else list(SAMPLERS)
    out = claim(args.out or args.run / "compare", "compare", overwrite=args.overwrite)
    compare(args.run, out, samplers, ints(args.steps, "--steps"), args.num_samples, request_from_args(args, COMPARE), device=args.device,
            report=print)
    print(f"wrote {out.path}/compare.json and compare.png{replaced_note(out)}")
    return 0
