"""`ddpmkit show-forward` (api.show_forward) end to end: q(x_t | x_0) on a few images, a row
per image and schedule."""

import pytest

from ddpmkit.cli import main

from helpers import assert_drawn, one_line_error


def test_show_forward_draws_a_row_per_image_and_schedule(tmp_path, capsys):
    for k in (1, 3):
        out = tmp_path / "nested" / f"f{k}.png"  # its folder is created
        assert main(["show-forward", "--out", str(out), "--num-images", str(k), "--timesteps", "100"]) == 0
        assert f"wrote {out}" in capsys.readouterr().out
    one, three = assert_drawn(tmp_path / "nested" / "f1.png"), assert_drawn(tmp_path / "nested" / "f3.png")
    assert one.width == three.width and three.height > 2 * one.height  # 2 rows (linear, cosine) against 6
    assert one.width > 4 * one.height  # ten columns of t


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--data", "moons"], "show-forward needs an image run: moons is 2-D data; for 2-D data see forward.png in a training run"),
        (["--num-images", "0"], "--num-images must be a positive integer, got 0"),
        (["--timesteps", "0"], "--timesteps must be a positive integer, got 0"),
        (["--image-size", "8x"], "invalid image size '8x'"),
    ],
)
def test_bad_show_forward_input_is_one_line(argv, message, tmp_path, capsys):
    assert main(["show-forward", "--out", str(tmp_path / "f.png"), *argv]) == 2
    one_line_error(capsys.readouterr().err, message)
    assert not (tmp_path / "f.png").exists()


def test_show_forward_on_one_image_file(tmp_path, capsys):
    import numpy as np
    from PIL import Image

    Image.fromarray(np.random.default_rng(0).integers(0, 255, (24, 32, 3), dtype=np.uint8)).save(tmp_path / "cat.jpg")
    assert main(["show-forward", "--data", str(tmp_path / "cat.jpg"), "--out", str(tmp_path / "f.png"), "--timesteps", "50"]) == 0
    one = assert_drawn(tmp_path / "f.png")  # one image: a row per schedule
    assert main(["show-forward", "--data", str(tmp_path / "cat.jpg"), "--image-size", "16", "--out", str(tmp_path / "g.png")]) == 0
    assert assert_drawn(tmp_path / "g.png").size == one.size  # cells are drawn at one figure size
    assert one.width > 4 * one.height
