"""`ddpmkit train-classifier`: the noise-aware classifier learns, its folder is whole and reads
back, and runs it cannot serve are refused in one line."""

import dataclasses
import json
import shutil

import numpy as np
import pytest

from ddpmkit import build, classifier
from ddpmkit.errors import UserError
from ddpmkit.cli import main
from ddpmkit.nets.classifier import ClassifierConfig

from helpers import one_line_error


def test_the_classifier_learns_and_its_folder_reads_back(guided_digits):
    folder = guided_digits.run / "classifier"
    assert sorted(p.name for p in folder.iterdir()) == ["accuracy.json", "classifier.safetensors", "config.json"]
    record = json.loads((folder / "accuracy.json").read_text())
    rows = record["accuracy"]
    assert [r["t"] for r in rows] == [0, 25, 50, 75]  # 0, T/4, T/2, 3T/4 of T = 100
    assert "held-out" in record["measured_on"] and record["num_images"] == 180  # the run's own held-out digits
    assert rows[0]["accuracy"] > max(0.6, 4 * record["chance"]), record  # far above chance at small t
    assert rows[0]["accuracy"] > rows[-1]["accuracy"]  # noise takes the class away
    for r in rows:  # the printed table is the stored one
        assert f"{r['t']:>5}  {r['alpha_bar']:>7.4f}  {r['accuracy']:.3f}" in guided_digits.output
    saved = json.loads((folder / "config.json").read_text())
    assert (saved["schedule"], saved["num_steps"]) == ("cosine", 100)
    config = ClassifierConfig.from_dict(saved["net"])
    assert (config.num_classes, config.base_width, config.in_channels) == (10, 16, 1)
    run = build.with_classifier(build.load_run(guided_digits.run))
    assert run.classifier.config == config and not any(p.requires_grad for p in run.classifier.parameters())


def test_runs_without_labels_and_2d_runs_are_refused(toy_run, tmp_path, capsys):
    images = np.random.default_rng(0).integers(0, 256, (40, 8, 8), dtype=np.uint8)  # no labels
    np.save(tmp_path / "unlabelled.npy", images)
    run = tmp_path / "run"
    assert main(["train", "--data", str(tmp_path / "unlabelled.npy"), "--out", str(run), "--steps", "2", "--timesteps", "20",
                 "--batch-size", "8", "--width", "8", "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["train-classifier", "--run", str(run)]) == 2
    one_line_error(capsys.readouterr().err, "train-classifier needs class labels and .*unlabelled.npy has none")
    assert not (run / "classifier").exists()
    assert main(["train-classifier", "--run", str(toy_run)]) == 2
    one_line_error(capsys.readouterr().err, "train-classifier needs an image run: moons is 2-D data; 2-D runs take classifier-free guidance")
    assert main(["train-classifier", "--run", str(run), "--steps", "0"]) == 2
    one_line_error(capsys.readouterr().err, "--steps must be a positive integer, got 0")
    assert not (toy_run / "classifier").exists()



def test_a_classifier_is_refused_for_a_schedule_with_other_beta_ends(guided_digits, tmp_path):
    """The classifier is trained on the run's own schedule, β ends included (its config.json
    records them); a linear schedule with other ends than the classifier's is refused."""
    run = tmp_path / "run"
    shutil.copytree(guided_digits.run, run)
    saved = json.loads((run / "classifier" / "config.json").read_text())
    config = build.run_config(run)
    d = config.diffusion
    assert (saved["schedule"], saved["num_steps"], saved["beta_start"], saved["beta_end"]) == (
        d.schedule, d.num_steps, d.beta_start, d.beta_end)
    assert classifier.load(run, config) is not None  # its own schedule: accepted
    (run / "classifier" / "config.json").write_text(json.dumps({**saved, "schedule": "linear"}))
    other_ends = dataclasses.replace(config, diffusion=dataclasses.replace(d, schedule="linear", beta_start=1e-4, beta_end=0.02))
    with pytest.raises(UserError, match=r"β ends default; the run has linear .* β ends 0.0001..0.02"):
        classifier.load(run, other_ends)
