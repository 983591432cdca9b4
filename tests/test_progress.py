"""Progress on long work: the commands that can run for minutes show a tqdm bar on stderr, as
`train` does, and --no-progress (declared once, cli/options.add_progress) silences it; `train`
ends by naming the pictures it wrote and the next command to try."""

import re

import pytest

from ddpmkit.cli import main

from helpers import TINY_IMAGES, TINY_TOY


def test_compare_samplers_shows_a_bar_over_its_settings(toy_run, tmp_path, capsys):
    argv = ["compare-samplers", "--run", str(toy_run), "--samplers", "ddim,ddpm", "--steps", "2,3", "-n", "20"]
    assert main([*argv, "--out", str(tmp_path / "a")]) == 0
    captured = capsys.readouterr()
    assert re.search(r"compare-samplers: 100%.*\| 4/4 ", captured.err), captured.err  # sampler × step count
    assert "drawing 20 with ddpm, 3 steps" in captured.err  # each setting's own steps
    assert re.search(r"^ddpm\s+3\s+3\s", captured.out, re.MULTILINE)  # the table stays on stdout
    assert main([*argv, "--out", str(tmp_path / "b"), "--no-progress"]) == 0
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("data, pictures", [
    ("moons", "loss.png, forward.png, reverse.png, diffusion.gif, samples.png"),
    ("digits", "loss.png, samples.png, forward.png"),
])
def test_train_ends_naming_its_pictures_and_the_next_command(data, pictures, tmp_path, capsys):
    tiny = [a for a in (TINY_TOY if data == "moons" else TINY_IMAGES) if a != "--no-progress"]
    out = tmp_path / "run"
    assert main(["train", "--data", data, "--out", str(out), *tiny]) == 0
    captured = capsys.readouterr()
    assert captured.out.splitlines()[-1] == f"wrote {pictures} in {out}; next: ddpmkit sample --run {out}"
    assert all((out / name).is_file() for name in pictures.split(", "))
    assert re.search(r"end-of-run pictures: 100%.*\| \d/\d ", captured.err), captured.err  # after the training bar


def test_the_editing_commands_and_export_take_no_progress(digits_run, tmp_path, capsys):
    """Every command with long work declares --no-progress (one declaration, shared)."""
    for command in ("train", "distill", "sample", "evaluate", "compare-samplers", "edit", "inpaint", "interpolate", "export"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        assert "--no-progress" in capsys.readouterr().out, command


def test_evaluate_passes_features_in_chunks_with_a_bar_and_the_same_numbers(evaluated, capsys):
    """evaluate's feature pass over the samples: chunks of 512 under a bar, numbers bitwise those of one call."""
    import numpy as np
    import torch

    from ddpmkit.evaluation.reference import feature_pass
    from ddpmkit.features import OwnFeatures

    extractor = OwnFeatures.load(evaluated.run / "features")
    images = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (1100, 1, 8, 8), dtype=np.uint8))
    whole = extractor.features(images)
    capsys.readouterr()
    assert np.array_equal(feature_pass(extractor, images, "the samples", progress=True), whole)
    assert re.search(r"features of the samples: .*\| \d/3 ", capsys.readouterr().err)  # 512 + 512 + 76 (cleared when done)
    assert np.array_equal(feature_pass(extractor, images, "the samples"), whole)
    assert capsys.readouterr().err == ""
