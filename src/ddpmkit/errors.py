"""The one error type for problems with what the user asked for, and the validators that raise it.

Every check of an option (a choice among names, a positive integer, a number in a range) is
one of the functions below, so a refused value reads the same wherever it was given. Every
check of a number refuses NaN and ±inf first (`check_finite`): a comparison with NaN is
always false, so `nan < 0` would let it through a range check and on into config.json or a
sampler.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable


class UserError(ValueError):
    """Bad input from the user: a wrong option, a missing file, data that cannot be read.

    The message is one line that names the problem and the fix; the CLI prints it
    and exits with code 2, with no traceback.
    """


def check_choice(option: str, value: str, choices: Iterable[str]) -> str:
    """`value` if it is one of `choices`, else "unknown OPTION 'x'; choose one of: a, b"."""
    choices = tuple(choices)
    if value not in choices:
        raise UserError(f"unknown {option} {value!r}; choose one of: {', '.join(choices)}")
    return value


def is_positive_int(value) -> bool:
    """A positive int (bools are not numbers here)."""
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def is_number(value) -> bool:
    """An int or float (bools are not numbers here)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_finite(option: str, value):
    """`value` if it is a finite number, else "OPTION must be a finite number, got nan"."""
    if not (is_number(value) and math.isfinite(value)):
        raise UserError(f"{option} must be a finite number, got {value!r}")
    return value


def check_positive(option: str, value, integer: bool = True):
    """`value` if it is a positive integer (or, with integer=False, a positive finite number)."""
    if not integer:
        check_finite(option, value)
    if not (is_positive_int(value) if integer else value > 0):
        raise UserError(f"{option} must be a positive {'integer' if integer else 'number'}, got {value!r}")
    return value


def check_not_negative(option: str, value):
    """`value` if it is a finite number >= 0."""
    check_finite(option, value)
    if value < 0:
        raise UserError(f"{option} must not be negative, got {value}")
    return value


def check_between(option: str, value, low: float, high: float, *, high_included: bool = True, what: str = ""):
    """`value` if it is a finite number in [low, high] (or [low, high) without high_included);
    `what` says what the number is ("the share of images kept out of training")."""
    check_finite(option, value)
    if not (low <= value <= high if high_included else low <= value < high):
        interval = f"[{low:g}, {high:g}{']' if high_included else ')'}"
        if what:
            raise UserError(f"{option} is {what}, in {interval}; got {value!r}")
        raise UserError(f"{option} must lie in {interval}, got {value!r}")
    return value


def check_finite_fields(config, section: str) -> None:
    """Every float of a config dataclass (and every float in its tuples) is finite: the last
    guard before config.json, which cannot hold NaN or inf (JSON has no such numbers)."""
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        for v in value if isinstance(value, tuple) else (value,):
            if isinstance(v, float):
                check_finite(f"{section}.{f.name}", v)
