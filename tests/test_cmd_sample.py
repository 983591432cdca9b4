"""`ddpmkit sample` (api.sample) end to end: samples.npy and samples.png hold the same samples,
the reverse GIF, class grids and labels.npy of conditional runs, and one-line errors."""

import json
import re
import shutil

import numpy as np
import pytest

from ddpmkit.build import load_run
from ddpmkit.cli import main
from ddpmkit.pictures import GIF_FRAMES
from ddpmkit.sampling import draw, picture_steps
from ddpmkit.sampling import SamplingRequest
from ddpmkit.viz import grid_scale

from helpers import assert_drawn, bluish_share, gif_frames, grid_tile, one_line_error, picture


def test_sample_writes_points_in_data_space_and_prints_distances(toy_run, tmp_path, capsys):
    assert main(["sample", "--run", str(toy_run), "-n", "300", "--out", str(tmp_path), "--seed", "5"]) == 0
    points = np.load(tmp_path / "samples.npy")
    assert points.shape == (300, 2) and points.dtype == np.float32
    assert np.array_equal(points, draw(load_run(toy_run), 300, SamplingRequest(seed=5, sampler="dpm++sde", steps=20)).data)  # the default
    assert main(["sample", "--run", str(toy_run), "-n", "300", "--out", str(tmp_path / "ddpm"), "--seed", "5", "--sampler", "ddpm"]) == 0
    assert np.array_equal(np.load(tmp_path / "ddpm" / "samples.npy"), draw(load_run(toy_run), 300, SamplingRequest(seed=5, sampler="ddpm", steps=50)).data)  # DDPM on all T
    assert bluish_share(assert_drawn(tmp_path / "samples.png")) > 0.002
    out = capsys.readouterr().out
    assert f"wrote 300 samples to {tmp_path}/samples.npy, samples.png in" in out
    assert re.search(r"distance to 300 fresh moons points: MMD² -?\d\.\d{5}, sliced Wasserstein \d\.\d{4}", out), out
    # same seed, same samples; the --no-ema weights differ
    main(["sample", "--run", str(toy_run), "-n", "300", "--out", str(tmp_path / "again"), "--seed", "5"])
    assert np.array_equal(points, np.load(tmp_path / "again" / "samples.npy"))
    main(["sample", "--run", str(toy_run), "-n", "300", "--out", str(tmp_path / "live"), "--seed", "5", "--no-ema"])
    assert not np.array_equal(points, np.load(tmp_path / "live" / "samples.npy"))


def test_a_2d_reverse_gif_has_a_frame_per_kept_step_and_the_samples(toy_run, tmp_path):
    assert main(["sample", "--run", str(toy_run), "-n", "50", "--out", str(tmp_path), "--gif", "--sampler", "dpm++",
                 "--steps", "5", "--spacing", "trailing"]) == 0
    assert np.load(tmp_path / "samples.npy").shape == (50, 2)
    assert gif_frames(tmp_path / "reverse.gif") == len(picture_steps(50, GIF_FRAMES, 5, "trailing")) + 1 == 6


def test_image_samples_png_shows_the_samples_of_samples_npy(digits_run, tmp_path):
    assert main(["sample", "--run", str(digits_run), "-n", "10", "--out", str(tmp_path), "--gif"]) == 0
    images = np.load(tmp_path / "samples.npy")
    assert images.shape == (10, 8, 8, 1) and images.dtype == np.uint8
    scale = grid_scale(8, 8)
    grid = picture(tmp_path / "samples.png", mode="L", size=((3 * 9 + 1) * scale, (4 * 9 + 1) * scale))  # 4 rows of 3
    for k in range(10):
        assert np.array_equal(grid_tile(grid, k, (8, 8), cols=3, scale=scale), images[k]), k
    assert gif_frames(tmp_path / "reverse.gif") == len(picture_steps(20, GIF_FRAMES)) + 1 == 21  # T = 20 and the samples


def test_class_grid_and_labels_file(conditional_digits, tmp_path):
    run_dir = str(conditional_digits.directory)
    assert main(["sample", "--run", run_dir, "--class", "all", "-n", "2", "--guidance", "1", "--out", str(tmp_path)]) == 0
    images = np.load(tmp_path / "samples.npy")
    assert images.shape == (20, 8, 8, 1)
    assert np.load(tmp_path / "labels.npy").tolist() == [k for k in range(10) for _ in range(2)]
    scale = grid_scale(8, 8)
    grid = picture(tmp_path / "samples.png", mode="L", size=((2 * 9 + 1) * scale, (10 * 9 + 1) * scale))  # a row per class
    assert np.array_equal(grid_tile(grid, 2 * 7 + 1, (8, 8), cols=2, scale=scale), images[15])  # class 7, second sample


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--class", "10"], r"class 10 is outside the trained labels 0\.\.9"),
        (["--class", "seven"], "--class takes a class index or 'all'"),
    ],
)
def test_bad_class(conditional_digits, argv, message, capsys, tmp_path):
    assert main(["sample", "--run", str(conditional_digits.directory), "-n", "2", "--out", str(tmp_path), *argv]) == 2
    one_line_error(capsys.readouterr().err, message)
    assert not (tmp_path / "samples.npy").exists()


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--guidance", "2"], "--guidance needs a conditional model; this run was trained without --conditional"),
        (["--class", "3"], "--class needs a conditional model; this run was trained without --conditional"),
        (["--class", "all"], "--class needs a conditional model; this run was trained without --conditional"),
        (["--sampler", "euler"], "unknown sampler 'euler'; choose one of: ddpm, ddim, dpm\\+\\+, dpm\\+\\+sde, heun"),
        (["--steps", "21"], r"--steps must lie in 1\.\.20 \(the trained T\), got 21"),
        (["-n", "0"], "the number of samples must be a positive integer, got 0"),
        (["--sampler", "ddim", "--eta", "-1"], r"--eta \(0: deterministic DDIM, 1: DDPM-like\) must not be negative, got -1"),
        (["--sampler", "ddpm", "--eta", "0.5"], "--eta applies to --sampler ddim only, not ddpm"),
    ],
)
def test_bad_sampling_requests_are_one_line_errors(digits_run, extra, message, capsys, tmp_path):
    assert main(["sample", "--run", str(digits_run), "-n", "2", "--out", str(tmp_path), *extra]) == 2
    one_line_error(capsys.readouterr().err, message)
    assert not (tmp_path / "samples.npy").exists()


def test_runs_that_are_not_there_are_one_line_errors(tmp_path, capsys):
    assert main(["sample", "--run", "/nonexistent/run"]) == 2
    one_line_error(capsys.readouterr().err, "run directory /nonexistent/run does not exist")
    (tmp_path / "model.safetensors").write_bytes(b"")
    assert main(["sample", "--run", str(tmp_path)]) == 2
    one_line_error(capsys.readouterr().err, "has no config.json, so it is not a ddpmkit run")


def test_weights_that_do_not_fit_config_json_are_refused(digits_run, tmp_path, capsys):
    edited = tmp_path / "edited"
    edited.mkdir()
    for name in ("model.safetensors", "ema.safetensors"):
        shutil.copy(digits_run / name, edited / name)
    config = json.loads((digits_run / "config.json").read_text())
    config["net"]["base_width"] = 16
    (edited / "config.json").write_text(json.dumps(config))
    assert main(["sample", "--run", str(edited), "-n", "2"]) == 2
    one_line_error(capsys.readouterr().err, r"the weights in \S*ema.safetensors do not fit the model config.json describes")
    assert not (edited / "samples").exists()


def test_strip_shows_each_sample_at_the_asked_steps_of_the_samplers_grid(digits_run, tmp_path, capsys):
    """--strip: a row per sample, a column per kept timestep and one for the sample; a timestep
    the grid lacks is the nearest grid step, said in one line per such step; x0 shows the
    predictions, which differ from the noisy states."""
    from ddpmkit import api
    from ddpmkit.pictures import SampleFiles
    from ddpmkit.sampling import nearest_grid_steps
    from ddpmkit.schedules import timestep_grid

    grid = timestep_grid(20, 4)  # T = 20, 4 steps: 19, 13, 6, 0
    assert nearest_grid_steps([19, 15, 10, 5, 0], grid) == [(19, 19), (15, 13), (10, 13), (5, 6), (0, 0)]
    pictures = {}
    for shows in ("xt", "x0"):
        out = tmp_path / shows
        assert main(["sample", "--run", str(digits_run), "-n", "3", "--steps", "4", "--strip", "19,15,10,5,0",
                     "--strip-shows", shows, "--out", str(out)]) == 0
        printed = capsys.readouterr().out
        assert "--strip 15: the sampler's grid has no step 15; showing its nearest step, 13" in printed
        assert "--strip 5: the sampler's grid has no step 5; showing its nearest step, 6" in printed
        pictures[shows] = assert_drawn(out / "strip.png")
    assert pictures["xt"].size == pictures["x0"].size and pictures["xt"].tobytes() != pictures["x0"].tobytes()
    four = api.sample(digits_run, 4, tmp_path / "four", files=SampleFiles(strip=(19, 0)))
    assert len(four) == 4
    three_rows, four_rows = pictures["xt"], picture(tmp_path / "four" / "strip.png")
    assert four_rows.height > three_rows.height and four_rows.width < three_rows.width  # 4 rows of 3 columns vs 3 rows of 5


def test_a_2d_strip_and_bad_strips(toy_run, tmp_path, capsys):
    out = tmp_path / "s"
    assert main(["sample", "--run", str(toy_run), "-n", "200", "--strip", "49,25,0", "--out", str(out)]) == 0
    assert bluish_share(assert_drawn(out / "strip.png")) > 0.001
    capsys.readouterr()  # the draw's progress bar
    for strip, message in (("50", r"--strip takes timesteps in 0\.\.49"), ("a,b", "--strip takes comma-separated integers")):
        assert main(["sample", "--run", str(toy_run), "--strip", strip, "--out", str(tmp_path / "bad")]) == 2
        one_line_error(capsys.readouterr().err, message)
        assert not (tmp_path / "bad").exists()
