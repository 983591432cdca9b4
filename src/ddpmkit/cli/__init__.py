"""Command line: `ddpmkit train | sample | show-forward | evaluate | compare-samplers | ema`.

Parses, validates, calls the API (one module per command family: train.py, sample.py,
evaluate.py, ema.py). The only package that prints for the user or exits with a code: 0 success,
1 training diverged, 2 bad input (one line, no traceback).
"""

from __future__ import annotations

import argparse
import sys

from ..errors import UserError
from ..train import TrainingDiverged
from . import ema, evaluate, sample, train

# command -> (adds its parser to the sub-parsers, runs it on the parsed arguments)
COMMANDS = {
    "train": (train.add_parser, train.run),
    "sample": (sample.add_sample, sample.run_sample),
    "show-forward": (sample.add_show_forward, sample.run_show_forward),
    "evaluate": (evaluate.add_evaluate, evaluate.run_evaluate),
    "compare-samplers": (evaluate.add_compare, evaluate.run_compare),
    "ema": (ema.add_ema, ema.run_ema),
}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="ddpmkit",
        description="Train, sample and evaluate denoising diffusion probabilistic models. "
        "Start with `ddpmkit train` (8x8 digits, a few minutes on a CPU) or `ddpmkit train --data moons` (2-D, under a minute).",
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add, _ in COMMANDS.values():
        add(sub)
    return p


def one_line(message: str) -> str:
    """The user's one line of an error message. A DataLoader worker re-raises a UserError with
    its traceback in the message ("Caught UserError in DataLoader worker process 0. Original
    Traceback ... UserError: <the message>"): keep only what the error itself said. Any
    other message spread over lines (a library's error text quoted in it) is joined into one."""
    if "Original Traceback" in message:
        message = message.rpartition("UserError: ")[2]
    return " ".join(line.strip() for line in message.splitlines() if line.strip())


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return COMMANDS[args.command][1](args)
    except UserError as e:
        print(f"ddpmkit {args.command}: error: {one_line(str(e))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; the last complete checkpoint is intact (continue with --resume)", file=sys.stderr)
        return 130
    except TrainingDiverged as e:
        print(f"ddpmkit {args.command}: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
