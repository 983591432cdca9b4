"""What the command-line parsers share: list options, the help formatter, the data option's help."""

from __future__ import annotations

import argparse
import inspect
from pathlib import Path

from ..data.toy import TOY_DATASETS
from ..errors import UserError

DATA_HELP = (f"{', '.join(TOY_DATASETS)} (2-D toy sets), digits (8x8 images), a folder of images, a .npy/.npz array file "
             "(Keras' mnist.npz / fashion-mnist.npz too), an IDX images file (train-images-idx3-ubyte[.gz], its labels "
             "beside it), or hf:NAME")
DEVICE_HELP = "cpu, cuda, cuda:N or mps (default: the best available)"


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
