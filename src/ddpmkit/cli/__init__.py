"""Command line: `ddpmkit train | sample | show-forward | show-schedule | evaluate | compare-samplers | export | import |
ema | edit | inpaint | interpolate | score | train-classifier | distill`.

Parses, validates, calls the API (one module per command family: train.py, sample.py,
evaluate.py, share.py, ema.py, edit.py, classifier.py, distill.py). The only package that prints for the user or exits with a code. `main` is the
one error boundary of every command (those added later included): whatever stops a command
ends in one line on stderr, what happened, which file or option, and what to do, with exit
code 2 for bad input (a UserError, a non-finite number, a refused argument), 1 for a runtime
fault (the operating system's errors, out of memory, divergence) and 130 for an interrupt.
`--debug` or DDPMKIT_DEBUG=1 prints the traceback before the line. Any other exception is a
bug in ddpmkit and keeps its traceback.
"""

from __future__ import annotations

import argparse
import errno
import os
import sys
import traceback

from ..checkpoint import newest_checkpoint
from ..errors import UserError, check_finite
from ..training import TrainingDiverged
from . import classifier, distill, edit, ema, evaluate, sample, share, train

# command -> (adds its parser to the sub-parsers, runs it on the parsed arguments)
COMMANDS = {
    "train": (train.add_parser, train.run),
    "sample": (sample.add_sample, sample.run_sample),
    "show-forward": (sample.add_show_forward, sample.run_show_forward),
    "show-schedule": (sample.add_show_schedule, sample.run_show_schedule),
    "evaluate": (evaluate.add_evaluate, evaluate.run_evaluate),
    "compare-samplers": (evaluate.add_compare, evaluate.run_compare),
    "export": (share.add_export, share.run_export),
    "import": (share.add_import, share.run_import),
    "ema": (ema.add_ema, ema.run_ema),
    "edit": (edit.add_edit, edit.run_edit),
    "inpaint": (edit.add_inpaint, edit.run_inpaint),
    "interpolate": (edit.add_interpolate, edit.run_interpolate),
    "score": (edit.add_score, edit.run_score),
    "train-classifier": (classifier.add_train_classifier, classifier.run_train_classifier),
    "distill": (distill.add_distill, distill.run_distill),
}
# Options that set how much memory a step takes, named in the out-of-memory line where a command has them.
SIZE_OPTIONS = ("--batch-size", "--num-samples", "--num-images", "--image-size", "--width")


class OneLineParser(argparse.ArgumentParser):
    """An argument parser whose refusals are one line (the usage is what --help prints)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def parser() -> argparse.ArgumentParser:
    p = OneLineParser(
        prog="ddpmkit",
        description="Train, sample and evaluate denoising diffusion probabilistic models. "
        "Start with `ddpmkit train` (8x8 digits, a few minutes on a CPU) or `ddpmkit train --data moons` (2-D, under a minute).",
    )
    p.add_argument("--debug", action="store_true", help="print the traceback of an error (or set DDPMKIT_DEBUG=1)")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add, _ in COMMANDS.values():
        add(sub)
    for command in sub.choices.values():  # every command, whoever added it (unless it declares its own)
        if "--debug" not in command._option_string_actions:
            command.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                                 help="print the traceback of an error (or set DDPMKIT_DEBUG=1)")
    return p


def command_parser(p: argparse.ArgumentParser, command: str) -> argparse.ArgumentParser:
    """The sub-parser of `command`."""
    return next(a for a in p._actions if isinstance(a, argparse._SubParsersAction)).choices[command]


def float_options(command: argparse.ArgumentParser) -> list[argparse.Action]:
    """The options of a command that take numbers with a point (type=float)."""
    return [a for a in command._actions if a.type is float and a.option_strings]


def option_name(action: argparse.Action) -> str:
    """An option's long name (--num-samples rather than -n)."""
    return max(action.option_strings, key=len)


def check_numbers(command: argparse.ArgumentParser, args) -> None:
    """Every float option given is a finite number (NaN and inf are refused here, for every
    command and option, before any range check where `nan < 0` would be false)."""
    for action in float_options(command):
        value = getattr(args, action.dest, None)
        for v in value if isinstance(value, list) else [value]:
            if v is not None:
                check_finite(option_name(action), v)


def one_line(message: str) -> str:
    """The user's one line of an error message. A DataLoader worker re-raises a UserError with
    its traceback in the message ("Caught UserError in DataLoader worker process 0. Original
    Traceback ... UserError: <the message>"): keep only what the error itself said. Any
    other message spread over lines (a library's error text quoted in it) is joined into one."""
    if "Original Traceback" in message:
        message = message.rpartition("UserError: ")[2]
    return " ".join(line.strip() for line in message.splitlines() if line.strip())


def on_disk(args) -> str:
    """What a stopped `train` left behind and how to go on, read from the run directory
    (empty for a command that trains nothing)."""
    run_dir = getattr(args, "training_into", None)
    if run_dir is None:
        return "files already written are whole (every write is atomic)"
    if not (run_dir / "config.json").is_file():
        return f"nothing was written to {run_dir}"
    newest = newest_checkpoint(run_dir)
    if newest is None:
        return (f"{run_dir} has no complete checkpoint yet: `ddpmkit train --resume {run_dir}` starts it again "
                "from step 0 with its config.json")
    return f"the newest complete checkpoint, {newest.name}, is intact: continue with `ddpmkit train --resume {run_dir}`"


def os_fault(e: OSError) -> str:
    """What an operating-system error means for the user, naming its file."""
    where = f" {e.filename}" if e.filename else ""
    what = {
        errno.ENOSPC: f"no space left on the device writing{where}; free space",
        errno.EDQUOT: f"disk quota exceeded writing{where}; free space",
        errno.EROFS: f"{where.strip() or 'the output'} is on a read-only file system; choose another --out",
        errno.EACCES: f"permission denied:{where}; choose another --out or fix its permissions",
        errno.EPERM: f"operation not permitted:{where}; choose another --out or fix its permissions",
        errno.EEXIST: f"{where.strip() or 'a file'} already exists; choose another --out",
        errno.ENOTDIR: f"a part of{where} is a file, not a folder; choose another path",
        errno.EISDIR: f"{where.strip() or 'the path'} is a folder where a file was expected; choose another path",
        errno.ENOENT: f"{where.strip() or 'a file'} does not exist (was it moved or deleted while ddpmkit ran?)",
    }.get(e.errno)
    return what or f"{e.strerror or type(e).__name__}{':' + where if where else ''}"


def out_of_memory(e: BaseException) -> bool:
    import torch

    return isinstance(e, (MemoryError, torch.OutOfMemoryError)) or (
        isinstance(e, RuntimeError) and ("can't allocate memory" in str(e) or "out of memory" in str(e).lower()))


def fault_line(e: BaseException, command: argparse.ArgumentParser, args) -> tuple[str, int] | None:
    """The one line and exit code of an exception the boundary handles; None for a bug."""
    if isinstance(e, UserError):
        return one_line(str(e)), 2
    if isinstance(e, TrainingDiverged):
        return one_line(str(e)), 1
    if isinstance(e, FloatingPointError):  # a checkpoint refused for NaN weights
        return f"training diverged: {one_line(str(e))}; {on_disk(args)}, or train a new run with a lower --lr", 1
    if isinstance(e, OSError):  # an output folder's fault says what it left (outputs.NotWritten)
        return f"{os_fault(e)}; {getattr(e, 'intact', '') or on_disk(args)}", 1
    if out_of_memory(e):
        given = [o for o in SIZE_OPTIONS if any(o in a.option_strings for a in command._actions)]
        sizes = f"; use smaller sizes ({', '.join(given)})" if given else ""
        detail = one_line(str(e)).split(". ")[0][:200]
        return f"out of memory ({detail or type(e).__name__}){sizes}, or another --device; {on_disk(args)}", 1
    return None


def main(argv: list[str] | None = None) -> int:
    p = parser()
    args = p.parse_args(argv)
    debug = getattr(args, "debug", False) or os.environ.get("DDPMKIT_DEBUG", "") not in ("", "0")
    command = command_parser(p, args.command)
    try:
        check_numbers(command, args)
        return COMMANDS[args.command][1](args)
    except KeyboardInterrupt:
        if debug:
            traceback.print_exc()
        print(f"ddpmkit {args.command}: interrupted; {on_disk(args)}", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 - sorted below; a bug is re-raised with its traceback
        handled = fault_line(e, command, args)
        if handled is None:
            raise
        if debug:
            traceback.print_exc()
        line, code = handled
        print(f"ddpmkit {args.command}: error: {line}", file=sys.stderr)
        return code


if __name__ == "__main__":
    sys.exit(main())
