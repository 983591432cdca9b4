"""What the command-line parsers share: list options, the help formatter, the data option's help."""

from __future__ import annotations

import argparse
import inspect
from pathlib import Path

from ..data.toy import TOY_DATASETS
from ..errors import UserError
from ..schedules import SPACINGS

DATA_HELP = (f"{', '.join(TOY_DATASETS)} (2-D toy sets), digits (8x8 images), a folder of images, a .npy/.npz array file "
             "(Keras' mnist.npz / fashion-mnist.npz too), an IDX images file (train-images-idx3-ubyte[.gz], its labels "
             "beside it), or hf:NAME")
DEVICE_HELP = "cpu, cuda, cuda:N or mps (default: the best available)"
SAMPLER_HELP = "ddpm (ancestral), ddim, dpm++ (DPM-Solver++ 2M, the ODE), dpm++sde (SDE-DPM-Solver++ 2M) or heun"


def ints(text: str, option: str) -> list[int]:
    """A comma-separated list of integers."""
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise UserError(f"{option} takes comma-separated integers, got {text!r}") from None


def sizes(text: str, option: str) -> tuple[int, ...]:
    """A comma-separated list of sizes, or none."""
    return () if text.strip().lower() == "none" else tuple(ints(text, "--" + option.replace("_", "-")))


class DefaultsUnlessNone(argparse.ArgumentDefaultsHelpFormatter):
    """Shows an option's default once: not when it is None (the help then says what happens)
    nor when the help already names it."""

    def _get_help_string(self, action):
        said = "default" in (action.help or "").lower()
        return action.help if action.default is None or said else super()._get_help_string(action)


def command(sub, name: str, declare, *, formatter_class=DefaultsUnlessNone,
            run: bool = False) -> argparse.ArgumentParser:
    """A sub-command's parser, described by the docstring of the function `declare` that adds
    its options (first paragraph: the one-line help; the rest: the description); with `run`,
    its required --run RUN_DIR option."""
    help, _, description = inspect.cleandoc(declare.__doc__).partition("\n\n")
    p = sub.add_parser(name, help=help, description=" ".join(description.split()), formatter_class=formatter_class)
    if run:
        p.add_argument("--run", type=Path, required=True, help="a run directory written by ddpmkit train")
    return p


def add_weights(p: argparse.ArgumentParser) -> None:
    """--weights, and --ema/--no-ema, the older names of --weights ema and --weights model."""
    p.add_argument("--weights", metavar="best|last|ema|model|PATH",
                   help="which weights: best (the step --eval-every measured best), last or ema (the EMA weights of the "
                   "newest checkpoint), model (its live weights), or a .safetensors file; without it, ema")
    p.add_argument("--ema", action=argparse.BooleanOptionalAction, default=None,
                   help="--ema is --weights ema, --no-ema is --weights model")


def weights_from_args(args) -> str:
    """The --weights name, from --weights or its older spelling --ema/--no-ema."""
    if args.ema is not None:
        if args.weights is not None:
            raise UserError("--ema/--no-ema are older names of --weights ema/model; give only --weights")
        return "ema" if args.ema else "model"
    return args.weights or "ema"


def add_sampling(p: argparse.ArgumentParser, *, sampler_help: str = SAMPLER_HELP, default_sampler: str | None = "ddpm",
                 steps_help: str = "sampling steps out of the trained T (default: all T)", eta: bool = True) -> None:
    """How a command samples, as `sample` declares it: --seed, --weights (and --ema/--no-ema),
    --sampler, --steps, --spacing and (with `eta`) DDIM's --eta."""
    p.add_argument("--seed", type=int, default=0, help="seed of the sampling noise")
    add_weights(p)
    p.add_argument("--sampler", default=default_sampler, help=sampler_help)
    p.add_argument("--steps", type=int, help=steps_help)
    p.add_argument("--spacing", choices=SPACINGS, default="linspace", help="which --steps timesteps: linspace (evenly "
                   "from T-1 to 0), leading (0, k, 2k, ...: DDIM's), trailing (T-1, T-1-k, ...: Lin et al. 2024)")
    if eta:
        p.add_argument("--eta", type=float, help="ddim only: 0 deterministic, 1 ancestral-like (default 0)")


def add_class(p: argparse.ArgumentParser, *, all_classes: bool = True) -> None:
    """A conditional run's --class and classifier-free --guidance, as `sample` declares them
    (`all_classes`: --class also takes 'all')."""
    if all_classes:
        p.add_argument("--class", dest="class_", metavar="K|all",
                       help="draw class K, or 'all' (-n per class, a grid row each): conditional runs, "
                       "or any run with a classifier (ddpmkit train-classifier) and --classifier-scale")
    else:
        p.add_argument("--class", dest="class_", metavar="K", help="the class K every image is edited as: conditional "
                       "runs, or any run with a classifier (ddpmkit train-classifier) and --classifier-scale")
    p.add_argument("--guidance", type=float, default=0.0, help="classifier-free guidance strength w: ε = (1+w)·ε(x,c) − "
                   "w·ε(x,∅); 0 is the conditional model, -1 the unconditional one, below -1 anti-guidance (away from the class)")


def add_classifier_scale(p: argparse.ArgumentParser) -> None:
    """--classifier-scale, as `sample` and the edits declare it."""
    p.add_argument("--classifier-scale", type=float, default=0.0, metavar="S", help="classifier guidance (Dhariwal & "
                   "Nichol 2021) towards --class by RUN/classifier/: ε̂ − S·√(1−ᾱ_t)·∇ log p(class | x_t); after --guidance; "
                   "0 is plain sampling; each network evaluation adds a classifier forward and backward pass")


def add_clip(p: argparse.ArgumentParser) -> None:
    """--clip and --dynamic-threshold, as `sample` declares them."""
    p.add_argument("--clip", choices=["static", "dynamic", "none"], help="keep x̂_0 in [-1, 1]: static clipping, "
                   "dynamic thresholding (Imagen) or none (default: static for images, none for 2-D data)")
    p.add_argument("--dynamic-threshold", type=float, default=0.995, metavar="P",
                   help="percentile of |x̂_0| for --clip dynamic (default 0.995)")


def sampler_options(args) -> dict:
    """The options that go to the sampler itself (--eta, ddim only)."""
    if getattr(args, "eta", None) is None:
        return {}
    if args.sampler != "ddim":
        raise UserError(f"--eta applies to --sampler ddim only, not {args.sampler or 'the default dpm++sde'}")
    return {"eta": args.eta}


def check_ode_points(points: int) -> None:
    """--ode-points of the ODE likelihood (evaluate --nll ode, score --nll ode): at least 2 points of the λ grid."""
    if points < 2:
        raise UserError(f"--ode-points must be at least 2, got {points}")
