"""`ddpmkit evaluate` and the evaluation API on tiny runs (seconds each; nothing downloaded)."""

import dataclasses
import json
import re

import numpy as np
import pytest
import torch

from ddpmkit import api, evaluation
from ddpmkit.build import load_run
from ddpmkit.cli import main
from ddpmkit.features import OwnTraining

TINY_IMAGES = ["--steps", "3", "--timesteps", "20", "--batch-size", "8", "--width", "8", "--no-progress"]


@pytest.fixture(scope="module")
def own_cache(tmp_path_factory):
    """This module's own ddpmkit cache: its first evaluation trains the features and computes
    the statistics, whatever other test modules left in the session's cache."""
    with pytest.MonkeyPatch.context() as mp:
        path = tmp_path_factory.mktemp("eval-cache")
        mp.setenv("DDPMKIT_CACHE", str(path))
        yield path


@pytest.fixture(scope="module")
def digits_run(own_cache, tmp_path_factory):
    out = tmp_path_factory.mktemp("eval") / "digits"
    assert main(["train", "--out", str(out), *TINY_IMAGES]) == 0
    return out


@pytest.fixture(scope="module")
def evaluated(digits_run):
    """The first evaluation of the run: trains its own features, computes the real statistics."""
    import contextlib
    import io

    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        assert main(["evaluate", "--run", str(digits_run), "-n", "40", "--steps", "3"]) == 0
    return buffer.getvalue()


def test_evaluate_prints_every_number_with_what_makes_it_comparable(digits_run, evaluated):
    out = evaluated
    assert "training the own feature classifier" in out and "computing own-classifier features of 1,617 real images" in out
    assert "samples:   40 from dpm++sde with 3 steps = 3 network evaluations each (T = 20), seed 0, EMA weights" in out
    assert "reference: all 1,617 images of digits (the training data)" in out
    own = json.loads((digits_run / "features" / "own.json").read_text())
    assert re.search(rf"features:  own-classifier: conv classifier trained on digits .*sha256 {own['sha256'][:12]}", out)
    for row in ("FD ", "KID ", "precision ", "recall ", "near-copies ", "classes "):
        assert f"\n  {row}" in out, row
    assert "it is not FID" in out and "same N (40)" in out

    record = json.loads((digits_run / "metrics.json").read_text())["sample_quality"][-1]
    assert record["samples"] == {"num": 40, "sampler": "dpm++sde", "steps": 3, "nfe": 3, "network_passes": 3, "seed": 0,
                                 "weights": "EMA", "clip": "static", "trained_steps_T": 20}
    assert record["features"]["sha256"] == own["sha256"] and record["features"]["name"] == "own-classifier"
    assert record["reference"]["num_images"] == 1617 and record["reference"]["statistics"] == "computed"
    assert record["frechet_distance"] > 0 and record["kid"]["subset_size"] == 40 and 0 <= record["precision"] <= 1
    assert 0 <= record["memorisation"]["near_copy_fraction"] <= 1 and record["memorisation"]["expected_without_copying"] == 0.01
    assert (digits_run / "eval" / "closest_pairs.png").stat().st_size > 0
    assert own["heldout_accuracy"] > 0.9 and own["data"]["num_images"] == 1617


def test_a_second_evaluation_reuses_the_features_and_the_cached_statistics(digits_run, evaluated, capsys):
    weights = (digits_run / "features" / "own.safetensors").read_bytes()
    assert main(["evaluate", "--run", str(digits_run), "-n", "40", "--steps", "3", "--seed", "1"]) == 0
    out = capsys.readouterr().out
    assert "training the own" not in out and "computing" not in out
    assert (digits_run / "features" / "own.safetensors").read_bytes() == weights
    records = json.loads((digits_run / "metrics.json").read_text())["sample_quality"]
    assert [r["samples"]["seed"] for r in records] == [0, 1] and records[-1]["reference"]["statistics"] == "cached"
    # the same settings again replace their record instead of adding one
    assert main(["evaluate", "--run", str(digits_run), "-n", "40", "--steps", "3", "--seed", "1"]) == 0
    assert len(json.loads((digits_run / "metrics.json").read_text())["sample_quality"]) == 2


def test_another_run_on_the_same_data_copies_the_cached_feature_network(digits_run, evaluated, tmp_path, monkeypatch):
    other = tmp_path / "other"
    assert main(["train", "--out", str(other), *TINY_IMAGES, "--seed", "3"]) == 0

    def no_training(*args, **kwargs):
        raise AssertionError("the own features were trained again")

    monkeypatch.setattr(evaluation, "train_own_features", no_training)
    messages = []
    reference = evaluation.image_reference(load_run(other), report=messages.append)
    first = json.loads((digits_run / "features" / "own.json").read_text())
    assert reference.extractor.sha256 == first["sha256"]  # one network for both runs: comparable numbers
    assert any("from the cache" in m for m in messages)
    assert evaluation.OwnFeatures.load(other / "features").sha256 == first["sha256"]  # saved with the run too
    assert reference.stats.cached  # and so the real statistics are shared


def test_a_damaged_cached_feature_network_is_trained_again(digits_run, evaluated, tmp_path, own_cache):
    run = load_run(digits_run)
    dataset = evaluation.load_data(run.config.data, run.config.seed)[0]
    training = OwnTraining(epochs=1, max_steps=5)  # settings of their own: a cache entry of their own
    first = evaluation.own_features(dataclasses.replace(run, directory=tmp_path / "a"), dataset, training)
    (entry,) = [p.parent for p in (own_cache / "features").glob(f"*/{evaluation.CACHE_KEY}")
                if json.loads(p.read_text())["training"] == dataclasses.asdict(training)]
    weights = (entry / "own.safetensors").read_bytes()
    (entry / "own.safetensors").write_bytes(weights[:-8] + bytes(8))  # tamper with the last weights
    messages = []
    again = evaluation.own_features(dataclasses.replace(run, directory=tmp_path / "b"), dataset, training, messages.append)
    assert any(m.startswith("training the own feature classifier") for m in messages), messages
    assert again.sha256 == first.sha256 and evaluation.OwnFeatures.load(entry).sha256 == first.sha256  # entry repaired


def test_memorisation_flags_training_images_given_as_samples(digits_run, evaluated, tmp_path):
    reference = evaluation.image_reference(load_run(digits_run))
    copies = reference.dataset.batch(range(0, 60, 2))[0]  # 30 training images
    memo = evaluation.memorisation(reference, copies)
    assert memo["flags"].all() and memo["sample_distances"].max() == 0.0
    assert memo["nearest"].tolist() == list(range(0, 60, 2))
    noise = torch.randint(0, 256, (30, 1, 8, 8), dtype=torch.uint8)
    assert not evaluation.memorisation(reference, noise)["flags"].any()
    nhwc = copies.permute(0, 2, 3, 1).numpy()
    evaluation.closest_pairs_picture(reference, nhwc, memo, tmp_path / "pairs.png")
    assert (tmp_path / "pairs.png").stat().st_size > 0


def test_memorisation_searches_every_training_image_beyond_the_reference_subset(digits_run, evaluated, monkeypatch):
    monkeypatch.setattr(evaluation, "MAX_REAL", 100)  # a reference subset of 100 of the digits trained on
    reference = evaluation.image_reference(load_run(digits_run))
    n = len(reference.dataset)
    outside = np.setdiff1d(np.arange(n), reference.indices)[[0, 500, 1000, -1]]
    assert len(reference.indices) == 100 and n > 1000
    memo = evaluation.memorisation(reference, reference.dataset.batch(outside.tolist())[0], chunk=256)
    assert memo["flags"].all() and memo["sample_distances"].max() == 0.0
    assert memo["nearest"].tolist() == outside.tolist() and memo["searched_images"] == n
    assert memo["calibration_images"] == 100  # calibration images come from the subset


def test_nll_of_a_digits_run_is_measured_on_its_held_out_images(digits_run, capsys):
    """The default digits run holds 10% (180 images) out of training; evaluate --nll scores those."""
    assert main(["evaluate", "--run", str(digits_run), "--nll", "vlb", "--num-images", "500"]) == 0
    assert "on the first 180 held-out images of digits (never trained on)" in capsys.readouterr().out
    metrics = json.loads((digits_run / "metrics.json").read_text())
    assert metrics["nll_vlb_examples"] == 180 and np.isfinite(metrics["nll_vlb_bpd"])


def test_feature_scores_of_real_images_beat_noise(digits_run, evaluated):
    reference = evaluation.image_reference(load_run(digits_run))
    real = reference.dataset.batch(range(1, 1617, 3))[0]  # 539 real digits
    noise = torch.randint(0, 256, real.shape, dtype=torch.uint8)
    good = evaluation.feature_scores(reference, reference.extractor.features(real), kid_subsets=10)
    bad = evaluation.feature_scores(reference, reference.extractor.features(noise), kid_subsets=10)
    assert good["frechet_distance"] < 0.05 * bad["frechet_distance"]
    assert abs(good["kid"]["mean"]) < 3 * good["kid"]["std"] < bad["kid"]["mean"]
    assert good["precision"] > 0.9 and good["recall"] > 0.9
    # noise collapses to a small region of this feature space: almost no coverage (recall), and
    # fewer samples inside the real manifold (some land in the large balls of outlying digits)
    assert bad["recall"] < 0.1 and bad["precision"] < 0.5


def test_compare_samplers_measures_image_runs_in_own_features(digits_run, evaluated, tmp_path, capsys):
    results = api.compare_samplers(load_run(digits_run), tmp_path, samplers=["ddim"], steps=[2, 4], n=20, report=print)
    assert [r["steps"] for r in results] == [2, 4] and all(r["frechet_distance"] > 0 for r in results)
    assert {"confidence", "class_entropy"} <= set(results[0])
    assert "own-classifier features" in json.loads((tmp_path / "compare.json").read_text())["measure"]


def test_inception_path_end_to_end_with_random_weights(digits_run, evaluated, tmp_path, monkeypatch, capsys):
    """Wiring only: a randomly initialised FID network saved in pytorch-fid's layout, 8 real
    images as the reference, inputs at 75 px (test_features runs the network at 299)."""
    from ddpmkit import features
    from ddpmkit.nets.inception import FIDInceptionV3

    torch.manual_seed(0)
    torch.save(FIDInceptionV3().state_dict(), tmp_path / "pt_inception-2015-12-05-6726825d.pth")
    monkeypatch.setattr(evaluation, "MAX_REAL", 8)
    monkeypatch.setattr(features, "INCEPTION_SIZE", 75)  # the smallest input the network takes: wiring, not values
    argv = ["evaluate", "--run", str(digits_run), "-n", "5", "--steps", "2", "--features", "inception",
            "--inception-weights", str(tmp_path / "pt_inception-2015-12-05-6726825d.pth")]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "\n  FID " in out and "TF1 resize_bilinear (align_corners=False, no half-pixel centres)" in out
    assert "papers use 50,000 samples, so this is not comparable with their FIDs" in out
    record = json.loads((digits_run / "metrics.json").read_text())["sample_quality"][-1]
    assert record["features"]["name"] == "inception-v3-2015-12-05" and record["reference"]["num_images"] == 8
    assert record["features"]["resize"] == "bilinear to 299x299 (TF1 resize_bilinear, align_corners=False, no half-pixel centres) from uint8"
    assert "seeded subset of 8 of the 1,617 images" in record["reference"]["what"]


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("eval") / "moons"
    tiny = ["--steps", "30", "--timesteps", "50", "--num-points", "500", "--batch-size", "64", "--no-progress"]
    assert main(["train", "--data", "moons", "--out", str(out), *tiny]) == 0
    return out


def test_evaluate_2d_run_gives_distribution_distances(toy_run, capsys):
    assert main(["evaluate", "--run", str(toy_run), "-n", "300", "--steps", "10"]) == 0
    out = capsys.readouterr().out
    assert "samples:   300 from dpm++sde with 10 steps = 10 network evaluations each" in out
    assert "reference: 300 fresh moons points" in out and "\n  MMD²" in out and "\n  sliced W2" in out
    metrics = json.loads((toy_run / "metrics.json").read_text())
    record = metrics["sample_quality"][-1]
    assert record["kind"] == "points" and np.isfinite(record["mmd"]) and record["sliced_wasserstein"] > 0
    assert "mmd" in metrics  # what training wrote is kept


@pytest.mark.parametrize(
    "argv, message",
    [
        (["-n", "3"], "--num-samples must be more than 3"),
        (["--sampler", "euler"], "unknown sampler 'euler'"),
        (["--steps", "21"], r"--steps must lie in 1\.\.20"),
        (["--features", "clip"], "unknown --features 'clip'; choose one of: own, inception"),
        (["--features", "inception", "--inception-weights", "/nonexistent.pth"], "no such file"),
        (["--features", "inception"], "no Inception weights found: ddpmkit never downloads them"),
        (["--inception-weights", "/nonexistent.pth"], "--inception-weights goes with --features inception"),
        (["--nll", "vlb", "--sampler", "ddim"], "--nll measures the likelihood only; drop --sampler"),
        (["--guidance", "2"], "--guidance needs a conditional model"),
    ],
)
def test_bad_evaluate_input_is_one_line(digits_run, evaluated, argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    assert main(["evaluate", "--run", str(digits_run), *argv]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and re.search(message, err), err


def test_inception_features_on_a_2d_run_are_refused(toy_run, capsys):
    assert main(["evaluate", "--run", str(toy_run), "--features", "inception"]) == 2
    assert "apply to image runs; moons is 2-D data" in capsys.readouterr().err


def test_quick_own_training_through_the_api(digits_run, evaluated, tmp_path):
    """The API takes a shorter training for the features (the CLI always uses the default)."""
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(digits_run, copy, ignore=shutil.ignore_patterns("features", "metrics.json", "eval"))
    run = load_run(copy)
    record = evaluation.evaluate_quality(run, evaluation.SampleSettings(num=20, steps=2), training=OwnTraining(epochs=1),
                                         kid_subsets=5)
    assert record["features"]["sha256"] != json.loads((digits_run / "features" / "own.json").read_text())["sha256"]
    assert json.loads((copy / "features" / "own.json").read_text())["training"]["epochs"] == 1
