"""The one error type for problems with what the user asked for, and the validators that raise it.

Every check of an option (a choice among names, a positive integer, a number in a range) is
one of the functions below, so a refused value reads the same wherever it was given.
"""

from __future__ import annotations

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


def check_positive(option: str, value, integer: bool = True):
    """`value` if it is a positive integer (or, with integer=False, a positive number)."""
    ok = is_positive_int(value) if integer else isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0
    if not ok:
        raise UserError(f"{option} must be a positive {'integer' if integer else 'number'}, got {value!r}")
    return value


def check_not_negative(option: str, value):
    if value < 0:
        raise UserError(f"{option} must not be negative, got {value}")
    return value
