"""`ddpmkit sample --classifier-scale S --class K` (and evaluate's): classifier guidance steers an
unconditional digits model to the asked class, as judged by another classifier; at S = 0 it is
plain sampling draw for draw; its cost is counted; what it cannot do is one line."""

import json

import numpy as np
import pytest
import torch

from ddpmkit import api, build
from ddpmkit.cli import main
from ddpmkit.features import OwnFeatures
from ddpmkit.sampling import Guidance, SamplingRequest, draw

from helpers import agreement, one_line_error


def test_guidance_draws_the_asked_class(guided_digits, evaluated, tmp_path, capsys):
    """The judge is the evaluate fixture's own feature classifier: another network (a plain conv
    classifier of clean digits), trained apart from the guiding one."""
    judge = OwnFeatures.load(evaluated.run / "features")
    shares = {}
    for scale in ("0", "4"):
        out = tmp_path / scale
        assert main(["sample", "--run", str(guided_digits.run), "--class", "all", "-n", "5", "--classifier-scale", scale,
                     "--sampler", "ddim", "--steps", "10", "--out", str(out)]) == 0
        labels = np.load(out / "labels.npy")
        assert labels.tolist() == [k for k in range(10) for _ in range(5)]  # a grid row per class
        shares[scale] = agreement(judge, np.load(out / "samples.npy"), labels)
    printed = capsys.readouterr().out
    assert "10 network evaluations = 10 network passes and 20 classifier passes" in printed
    assert shares["4"] > 0.5 and shares["4"] > shares["0"] + 0.3, shares  # chance: 0.1


@pytest.mark.parametrize("sampler", ["ddpm", "dpm++sde"])
def test_scale_zero_is_plain_sampling_draw_for_draw(guided_digits, sampler, tmp_path):
    run = build.load_run(guided_digits.run)
    guided = build.with_classifier(run)
    plain = draw(run, 6, SamplingRequest(seed=1, sampler=sampler, steps=5)).model
    for scale, same in ((0.0, True), (2.0, False)):
        asked = SamplingRequest(seed=1, sampler=sampler, steps=5, classes=3, guidance=Guidance(classifier=scale))
        assert torch.equal(draw(guided, 6, asked).model, plain) == same
    a = api.sample(guided_digits.run, 6, tmp_path / "a", SamplingRequest(seed=1, sampler=sampler, steps=5, classes=3))
    b = api.sample(guided_digits.run, 6, tmp_path / "b", SamplingRequest(seed=1, sampler=sampler, steps=5))
    assert np.array_equal(a, b)


def test_evaluate_records_classifier_guidance(guided_digits, eval_cache, tmp_path, capsys):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(guided_digits.run, run)
    assert main(["evaluate", "--run", str(run), "-n", "20", "--steps", "2", "--classifier-scale", "2"]) == 0
    samples = json.loads((run / "metrics.json").read_text())["sample_quality"][-1]["samples"]
    assert samples["classifier_scale"] == 2 and samples["classifier_passes"] == 2 * samples["nfe"] == 4
    assert samples["labels"] == "balanced over 10 classes"
    assert "4 classifier passes" in capsys.readouterr().out


@pytest.mark.parametrize(
    "which, extra, message",
    [
        ("plain", ["--class", "3"], "--class needs a conditional model; this run was trained without --conditional and "
                                    "has no classifier: .*classifier does not exist; train one with `ddpmkit train-classifier"),
        ("plain", ["--class", "3", "--classifier-scale", "2"], "--classifier-scale needs the run's classifier: "),
        ("guided", ["--classifier-scale", "2"], "--classifier-scale needs --class K or --class all"),
        ("guided", ["--class", "12", "--classifier-scale", "2"], r"class 12 is outside the trained labels 0\.\.9"),
        ("guided", ["--class", "3", "--guidance", "1"], "--guidance needs a conditional model"),
        ("guided", ["--class", "3", "--classifier-scale", "nan"], "--classifier-scale must be a finite number"),
    ],
)
def test_what_guidance_cannot_do_is_one_line(digits_run, guided_digits, which, extra, message, capsys, tmp_path):
    run = digits_run if which == "plain" else guided_digits.run
    assert main(["sample", "--run", str(run), "-n", "2", "--out", str(tmp_path), *extra]) == 2
    one_line_error(capsys.readouterr().err, message)
    assert not (tmp_path / "samples.npy").exists()
