"""evaluation.quality: the sample-quality record of an image run (Fréchet distance, KID,
precision and recall in a feature space, the classifier's classes) and its checked settings."""

import json
import shutil

import pytest
import torch

from ddpmkit.build import load_run
from ddpmkit.errors import UserError
from ddpmkit.evaluation import QualitySettings, evaluate_quality, feature_scores, image_reference, quick_scores
from ddpmkit.features import OwnTraining
from ddpmkit.sampling import Guidance, SamplingRequest

from helpers import picture


def test_feature_scores_of_real_images_beat_noise(evaluated, eval_cache):
    ref = image_reference(load_run(evaluated.run))
    real = ref.dataset.batch(range(1, 1617, 3))[0]  # 539 real digits
    noise = torch.randint(0, 256, real.shape, dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    good = feature_scores(ref, ref.extractor.features(real), kid_subsets=10)
    bad = feature_scores(ref, ref.extractor.features(noise), kid_subsets=10)
    assert good["frechet_distance"] < 0.05 * bad["frechet_distance"]
    assert abs(good["kid"]["mean"]) < 3 * good["kid"]["std"] < bad["kid"]["mean"]
    assert good["precision"] > 0.9 and good["recall"] > 0.9
    # noise collapses to a small region of this feature space: almost no coverage (recall), and
    # fewer samples inside the real manifold (some land in the large balls of outlying digits)
    assert bad["recall"] < 0.1 and bad["precision"] < 0.5
    # the quick measure of compare-samplers ranks them alike, with the classifier's view
    quick_good = quick_scores(ref, real.permute(0, 2, 3, 1).numpy())
    quick_bad = quick_scores(ref, noise.permute(0, 2, 3, 1).numpy())
    assert quick_good["frechet_distance"] == pytest.approx(good["frechet_distance"])
    assert quick_good["class_entropy"] > 2.2 and quick_good["confidence"] > quick_bad["confidence"]  # ten digits, ~log 10


def test_quick_own_training_through_the_api(evaluated, eval_cache, tmp_path):
    """The API takes a shorter training for the features (the CLI always uses the default)."""
    copy = tmp_path / "copy"
    shutil.copytree(evaluated.run, copy, ignore=shutil.ignore_patterns("features", "metrics.json", "eval"))
    run = load_run(copy)
    record = evaluate_quality(run, SamplingRequest(steps=2), QualitySettings(num=20, training=OwnTraining(epochs=1), kid_subsets=5))
    assert record["features"]["sha256"] != evaluated.own["sha256"]
    assert json.loads((copy / "features" / "own.json").read_text())["training"]["epochs"] == 1
    assert record["samples"]["num"] == 20 and record["kid"]["subsets"] == 5
    assert record["memorisation"]["picture"] == str(copy / "eval" / "closest_pairs.png")
    picture(copy / "eval" / "closest_pairs.png")  # drawn where the record says


@pytest.mark.parametrize(
    "asked, message",
    [
        (lambda: (SamplingRequest(), QualitySettings(num=3)), "--num-samples must be more than 3"),
        (lambda: (SamplingRequest(sampler="euler"), QualitySettings()), "unknown sampler 'euler'"),
        (lambda: (SamplingRequest(steps=21), QualitySettings()), r"--steps must lie in 1\.\.20"),
        (lambda: (SamplingRequest(guidance=Guidance(cfg=1.0)), QualitySettings()), "--guidance needs a conditional model"),
        (lambda: (SamplingRequest(classes=3), QualitySettings()), "evaluate measures samples balanced over the run's classes"),
    ],
)
def test_settings_are_checked_before_anything_is_measured(digits_run, asked, message):
    with pytest.raises(UserError, match=message):
        evaluate_quality(load_run(digits_run), *asked())
