"""`ddpmkit edit`, `inpaint`, `interpolate` and `score` (api.edit, inpaint, interpolate, score) end
to end: what each writes, the inputs read like training data, strength 0 and 1, the kept pixels of
an inpainting, the reported reconstruction error, the scores of unusual images against the held-out
ones, and one-line errors that create nothing."""

import json

import numpy as np
import pytest
from PIL import Image
from sklearn.datasets import load_digits

from ddpmkit import api
from ddpmkit.build import load_run
from ddpmkit.cli import main
from ddpmkit.data.images import load_image_data
from ddpmkit.data.inputs import read_inputs
from ddpmkit.sampling import SamplingRequest

from helpers import agreement, assert_drawn, gif_frames, one_line_error


@pytest.fixture(scope="module")
def digit_files(tmp_path_factory):
    """Four 8x8 digits as grey PNG files in a folder, the mask of their right half, and a colour image."""
    folder = tmp_path_factory.mktemp("inputs")
    images = np.rint(load_digits().images[:4] * 255 / 16).astype(np.uint8)
    for i, image in enumerate(images):
        Image.fromarray(image).save(folder / f"{i}.png")
    mask = np.zeros((8, 8), np.uint8)
    mask[:, 4:] = 255
    Image.fromarray(mask).save(folder.parent / "mask.png")
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(folder.parent / "mask16.png")
    Image.fromarray(np.full((8, 8, 3), (200, 30, 30), np.uint8)).save(folder.parent / "red.png")
    return folder, images[..., None]  # [4, 8, 8, 1]


def test_edit_at_strength_zero_is_the_input_and_at_one_is_sample(digits_run, digit_files, tmp_path, capsys):
    folder, images = digit_files
    assert main(["edit", "--run", str(digits_run), "--input", str(folder), "--strength", "0", "--out", str(tmp_path / "e0")]) == 0
    assert np.array_equal(np.load(tmp_path / "e0" / "samples.npy"), images)
    out = capsys.readouterr().out
    assert f"read 4 image(s) from {folder}: 4 at 8x8 as is; grey" in out and "no noise: the inputs" in out
    for name in ("samples.png", "edit.png"):
        assert_drawn(tmp_path / "e0" / name)
    # strength 1 ignores the input: exactly `sample` with the same seed, sampler and steps
    common = ["--seed", "3", "--sampler", "ddim", "--steps", "4"]
    assert main(["edit", "--run", str(digits_run), "--input", str(folder), "--strength", "1", "--out", str(tmp_path / "e1"), *common]) == 0
    assert main(["sample", "--run", str(digits_run), "-n", "4", "--out", str(tmp_path / "s"), *common]) == 0
    assert np.array_equal(np.load(tmp_path / "e1" / "samples.npy"), np.load(tmp_path / "s" / "samples.npy"))
    record = json.loads((tmp_path / "e1" / "edit.json").read_text())
    assert record["start_timestep"] == 19 and record["steps"] == 4 and record["inputs"] == ["0.png", "1.png", "2.png", "3.png"]


def test_inputs_are_fitted_exactly_as_training_data(tmp_path):
    """A 16x12 photo-like image: read_inputs gives the bytes load_image_data gives for training, and says what it did."""
    (tmp_path / "data").mkdir()
    pixels = np.random.default_rng(0).integers(0, 256, (16, 12, 4), dtype=np.uint8)  # RGBA, H 16, W 12
    Image.fromarray(pixels).save(tmp_path / "data" / "photo.png")
    read = read_inputs(tmp_path / "data" / "photo.png", (8, 8), 3)
    trained = load_image_data(tmp_path / "data", image_size=(8, 8), channels=3).images_uint8
    assert np.array_equal(read.images.numpy(), trained.numpy())
    assert read.note == "resized 16x12 -> 8x8 (centre crop); RGB, alpha composited over white"
    assert read.sizes == [(16, 12)] and read.names == ["photo.png"]


def test_inpaint_keeps_the_known_pixels_and_fills_the_rest(digits_run, digit_files, tmp_path, capsys):
    folder, images = digit_files
    mask = str(folder.parent / "mask.png")
    argv = ["inpaint", "--run", str(digits_run), "--input", str(folder), "--mask", mask, "--resample", "2", "--jump", "3"]
    assert main([*argv, "--out", str(tmp_path / "a")]) == 0
    result = np.load(tmp_path / "a" / "samples.npy")
    assert result.shape == images.shape and result.dtype == np.uint8
    assert np.array_equal(result[:, :, :4], images[:, :, :4])  # black in the mask: the input's bytes
    assert (result[:, :, 4:] != images[:, :, 4:]).mean() > 0.5  # white: filled in by the (barely trained) model
    record = json.loads((tmp_path / "a" / "inpaint.json").read_text())
    assert record["filled_pixels"] == 32 and record["nfe"] == 20 + 1 * 3 * len(range(19, 2, -3))
    assert "32 of 64 pixels filled in" in capsys.readouterr().out
    assert_drawn(tmp_path / "a" / "inpaint.png")
    # ddim, its deterministic step
    assert main([*argv, "--sampler", "ddim", "--eta", "0.5", "--out", str(tmp_path / "d")]) == 0
    assert np.array_equal(np.load(tmp_path / "d" / "samples.npy")[:, :, :4], images[:, :, :4])
    assert json.loads((tmp_path / "d" / "inpaint.json").read_text())["sampling"]["eta"] == 0.5


def test_inpaint_a_conditional_run_with_a_class(conditional_digits, digit_files, tmp_path):
    folder, images = digit_files
    edited = api.inpaint(conditional_digits.directory, folder / "1.png", folder.parent / "mask.png", tmp_path,
                         SamplingRequest(classes=1, steps=10))
    assert np.array_equal(edited.data[0, :, :4], images[1, :, :4])
    assert np.array_equal(np.load(tmp_path / "labels.npy"), [1])


def test_interpolate_reports_the_endpoint_error_it_has(conditional_digits, digit_files, tmp_path, capsys):
    folder, images = digit_files
    run = conditional_digits.directory
    assert main(["interpolate", "--run", str(run), "--a", str(folder / "0.png"), "--b", str(folder / "1.png"),
                 "--frames", "5", "--steps", "50", "--out", str(tmp_path)]) == 0
    frames = np.load(tmp_path / "samples.npy")
    assert frames.shape == (5, 8, 8, 1)
    error = json.loads((tmp_path / "interpolation.json").read_text())["reconstruction_error"]
    for end, frame, given in (("a", frames[0], images[0]), ("b", frames[-1], images[1])):
        diff = np.abs(frame.astype(int) - given.astype(int))
        assert error[end]["max"] == diff.max() and error[end]["mean"] == pytest.approx(diff.mean())
        assert diff.mean() < 8  # of 255 levels: inversion and decoding nearly invert each other
    out = capsys.readouterr().out
    assert f"a max {error['a']['max']}, mean {error['a']['mean']:.2f}" in out
    assert gif_frames(tmp_path / "interpolation.gif") == 2 * 5 - 2  # forth and back
    assert_drawn(tmp_path / "interpolation.png")


def test_classifier_guidance_steers_edits_and_inpaintings_towards_the_class(guided_digits, evaluated, tmp_path, capsys):
    """An unconditional run with its classifier: held-out digits that are not a 3, edited (SDEdit at
    strength 0.6) or with all but their top two rows filled in (RePaint), towards class 3 at
    classifier scale 0 and 16. The judge is the evaluate fixture's own feature classifier, trained
    apart from the guiding one. Measured: threes 0.11 -> 0.44 -> 0.61 (edit) and 0.14 -> 0.47 ->
    0.53 (inpaint) at scales 0, 8, 16."""
    from ddpmkit.features import OwnFeatures

    judge = OwnFeatures.load(evaluated.run / "features")
    held = load_run(guided_digits.run).modality.load_heldout()
    images = held.batch(range(40))[0]
    keep = (held.labels[:40] != 3).numpy()  # digits that are not a 3 already
    np.save(tmp_path / "in.npy", images.numpy()[keep].transpose(0, 2, 3, 1))
    mask = np.zeros((8, 8), np.uint8)
    mask[2:] = 255
    Image.fromarray(mask).save(tmp_path / "mask.png")

    run, common = str(guided_digits.run), ["--class", "3", "--sampler", "ddim", "--steps", "20", "--seed", "1"]
    shares = {}
    for scale in ("0", "16"):
        for command, extra in (("edit", ["--strength", "0.6"]), ("inpaint", ["--mask", str(tmp_path / "mask.png")])):
            out = tmp_path / f"{command}-{scale}"
            assert main([command, "--run", run, "--input", str(tmp_path / "in.npy"), *extra, *common,
                         "--classifier-scale", scale, "--out", str(out)]) == 0
            shares[command, scale] = agreement(judge, np.load(out / "samples.npy"), 3)
            assert np.array_equal(np.load(out / "labels.npy"), [3] * int(keep.sum()))
    for command in ("edit", "inpaint"):
        assert shares[command, "16"] > shares[command, "0"] + 0.3, shares  # chance: 0.1
    given = np.load(tmp_path / "in.npy")
    assert np.array_equal(np.load(tmp_path / "inpaint-16" / "samples.npy")[:, :2], given[:, :2])  # kept exactly
    assert json.loads((tmp_path / "edit-16" / "edit.json").read_text())["sampling"]["classifier_scale"] == 16.0
    assert "classifier_scale" not in json.loads((tmp_path / "edit-0" / "edit.json").read_text())["sampling"]


def test_unusual_images_score_clearly_worse_than_held_out_ones(conditional_digits, tmp_path, capsys):
    """Held-out digits (never trained on) against inverted digits and uniform noise, by the bound."""
    held = conditional_digits.modality.load_heldout()
    heldout = held.batch(range(6))[0]
    inverted = 255 - held.batch(range(6, 12))[0]
    noise = np.random.default_rng(0).integers(0, 256, (6, 1, 8, 8), dtype=np.uint8)
    np.save(tmp_path / "mix.npy", np.concatenate([heldout.numpy(), inverted.numpy(), noise]).transpose(0, 2, 3, 1))
    out = tmp_path / "scores" / "flags.csv"
    assert main(["score", "--run", str(conditional_digits.directory), "--images", str(tmp_path / "mix.npy"),
                 "--out", str(out), "--num-reference", "24"]) == 0
    rows = out.read_text().splitlines()
    assert rows[0] == "rank,name,bits_per_dim,heldout_percentile,flag" and len(rows) == 19
    bpd = {r.split(",")[1]: float(r.split(",")[2]) for r in rows[1:]}
    assert list(bpd.values()) == sorted(bpd.values(), reverse=True)  # worst first
    kinds = [np.array([bpd[f"mix.npy[{i}]"] for i in range(k, k + 6)]) for k in (0, 6, 12)]
    reference = json.loads(out.with_suffix(".json").read_text())["reference"]
    assert np.median(kinds[0]) < reference["p95"]
    assert kinds[1].min() > reference["p95"] + 2 and kinds[2].min() > reference["p95"] + 2  # bits/dim
    flags = {r.split(",")[1]: r.split(",")[4] for r in rows[1:]}
    assert all(flags[f"mix.npy[{i}]"] == "high" for i in range(6, 18))
    printed = capsys.readouterr().out
    assert f"median {reference['median']:.3f}, 5th percentile {reference['p5']:.3f}, 95th {reference['p95']:.3f}" in printed
    assert np.load(out.with_suffix(".npy")).shape == (18, 8, 8, 1)
    assert_drawn(out.with_suffix(".png"))


@pytest.mark.parametrize(
    "argv, message",
    [
        (["edit", "--input", "{folder}", "--strength", "1.5"], r"--strength is the share of the forward process .* in \[0, 1\]; got 1\.5"),
        (["edit", "--input", "{red}"], r"--input red\.png is an RGB image but the run models 1-channel \(grey\) images"),
        (["edit", "--input", "{folder}", "--class", "3"], "--class needs a conditional model"),
        (["edit", "--input", "{folder}", "--class", "3", "--classifier-scale", "2"], "--classifier-scale needs the run's classifier: "),
        (["inpaint", "--input", "{folder}", "--mask", "{mask}", "--classifier-scale", "inf"], "--classifier-scale must be a finite number"),
        (["inpaint", "--input", "{folder}", "--mask", "{mask16}"], r"--mask mask16\.png is 16x16 but 0\.png is 8x8; draw the mask at the input's size"),
        (["inpaint", "--input", "{folder}", "--mask", "{mask}", "--sampler", "dpm++"], "inpaint takes --sampler ddpm or ddim"),
        (["interpolate", "--a", "{folder}", "--b", "{folder}/1.png"], "--a takes one image, got 4"),
        (["interpolate", "--a", "{folder}/0.png", "--b", "{folder}/1.png", "--sampler", "ddpm"], "--sampler takes ddim only"),
        (["score", "--images", "{folder}", "--out", "{out}/scores.txt"], "give a name ending in .csv"),
        (["score", "--images", "{red}", "--out", "{out}/s.csv"], "red.png is an RGB image"),
    ],
)
def test_bad_edits_are_one_line_errors_that_create_nothing(digits_run, digit_files, argv, message, tmp_path, capsys):
    folder, _ = digit_files
    out = tmp_path / "out"
    names = {"folder": folder, "red": folder.parent / "red.png", "mask": folder.parent / "mask.png",
             "mask16": folder.parent / "mask16.png", "out": out}
    argv = [a.format(**names) for a in argv]
    extra = [] if argv[0] == "score" else ["--out", str(out)]
    assert main([argv[0], "--run", str(digits_run), *argv[1:], *extra]) == 2
    one_line_error(capsys.readouterr().err, message)
    assert not out.exists()



def test_2d_runs_take_no_images(toy_run, digit_files, tmp_path, capsys):
    folder, _ = digit_files
    assert main(["edit", "--run", str(toy_run), "--input", str(folder), "--out", str(tmp_path / "out")]) == 2
    one_line_error(capsys.readouterr().err, "edit needs an image run: moons is 2-D data")
    assert not (tmp_path / "out").exists()
