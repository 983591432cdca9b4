"""`ddpmkit show-schedule` (api.show_schedule) end to end: β_t, ᾱ_t and log-SNR of one or more
schedules in one PNG of three panels."""

import numpy as np
import pytest

from ddpmkit import api
from ddpmkit.cli import main

from helpers import assert_drawn, one_line_error


def test_show_schedule_draws_three_panels_of_each_schedule(tmp_path, capsys):
    out = tmp_path / "nested" / "s.png"  # its folder is created
    assert main(["show-schedule", "--schedule", "linear,cosine,sigmoid:1e-5:5e-3", "--timesteps", "200",
                 "--beta-start", "1e-4", "--beta-end", "0.02", "--out", str(out)]) == 0
    assert capsys.readouterr().out.strip() == (f"wrote {out}: linear β 0.0001 → 0.02; cosine; sigmoid β 1e-05 → 0.005")
    three = assert_drawn(out)
    assert three.width > 2.5 * three.height  # three panels side by side
    assert api.show_schedule(["cosine"], tmp_path / "one.png") == ["cosine"]
    one = assert_drawn(tmp_path / "one.png")
    assert one.size == three.size
    a = np.asarray(one.convert("L"), dtype=float)
    b = np.asarray(three.convert("L"), dtype=float)
    assert (a < 200).mean() < (b < 200).mean()  # more lines drawn


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--schedule", "warp"], "unknown schedule 'warp'"),
        (["--schedule", "cosine:1e-4:0.02"], "the cosine schedule is defined by its ᾱ curve"),
        (["--schedule", "linear:1e-4"], "--schedule takes NAME or NAME:BETA_START:BETA_END, got 'linear:1e-4'"),
        (["--schedule", "linear:a:b"], "the ends must be numbers"),
        (["--schedule", "linear", "--beta-start", "0.5", "--beta-end", "0.1"], "must satisfy 0 < start ≤ end < 1"),
        (["--timesteps", "0"], "--timesteps must be a positive integer, got 0"),
    ],
)
def test_bad_show_schedule_input_is_one_line(argv, message, tmp_path, capsys):
    assert main(["show-schedule", "--out", str(tmp_path / "s.png"), *argv]) == 2
    one_line_error(capsys.readouterr().err, message)
    assert not (tmp_path / "s.png").exists()
