"""errors: the one error type for bad input and the validators every option goes through, so a
refused value reads the same wherever it was given."""

import pytest

from ddpmkit.errors import UserError, check_choice, check_not_negative, check_positive, is_positive_int


def test_a_choice_names_every_option():
    assert check_choice("sampler", "ddim", ("ddpm", "ddim")) == "ddim"
    assert check_choice("schedule", "cosine", (name for name in ("linear", "cosine"))) == "cosine"  # any iterable
    with pytest.raises(UserError) as info:
        check_choice("sampler", "euler", ["ddpm", "ddim"])
    assert str(info.value) == "unknown sampler 'euler'; choose one of: ddpm, ddim"


def test_positive_integers_and_numbers():
    assert check_positive("--steps", 3) == 3 and check_positive("--lr", 1e-4, integer=False) == 1e-4
    assert [is_positive_int(v) for v in (1, 0, -2, 1.0, True, "3")] == [True, False, False, False, False, False]
    for value, integer, shown in ((0, True, "0"), (2.5, True, "2.5"), (True, True, "True"), (0.0, False, "0.0"), (True, False, "True")):
        with pytest.raises(UserError) as info:
            check_positive("--x", value, integer=integer)
        # a bool is no number: refused first as not a finite number where a float is asked for
        kind = "a positive integer" if integer else ("a finite number" if value is True else "a positive number")
        assert str(info.value) == f"--x must be {kind}, got {shown}"


def test_not_negative():
    assert check_not_negative("--eta", 0) == 0
    with pytest.raises(UserError) as info:
        check_not_negative("--eta", -0.5)
    assert str(info.value) == "--eta must not be negative, got -0.5"
