"""`ddpmkit evaluate` (api.evaluate, api.likelihood) end to end on tiny runs (seconds each;
nothing downloaded): what it prints, what it stores in metrics.json, and its one-line errors."""

import json
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

from ddpmkit import features
from ddpmkit.cli import main
from ddpmkit.evaluation import reference
from ddpmkit.likelihood import lambda_grid
from ddpmkit.nets.inception import FIDInceptionV3
from ddpmkit.schedules import NoiseSchedule

from helpers import one_line_error, picture


def own_records(run_dir) -> list[dict]:
    records = json.loads((run_dir / "metrics.json").read_text())["sample_quality"]
    return [r for r in records if r["features"]["name"] == "own-classifier"]


# ---- sample quality of images -----------------------------------------------------------------
def test_evaluate_prints_every_number_with_what_makes_it_comparable(evaluated):
    out, own, record = evaluated.output, evaluated.own, evaluated.record
    assert "training the own feature classifier" in out and "computing own-classifier features of 1,617 real images" in out
    assert "samples:   40 from dpm++sde with 3 steps = 3 network evaluations each (T = 20), seed 0, EMA weights" in out
    assert "reference: all 1,617 images of digits (the training data)" in out
    assert re.search(rf"features:  own-classifier: conv classifier trained on digits .*sha256 {own['sha256'][:12]}", out)
    for row in ("FD ", "KID ", "precision ", "recall ", "near-copies ", "classes "):
        assert f"\n  {row}" in out, row
    assert "it is not FID" in out and "same N (40)" in out
    assert f"written to {evaluated.run}/metrics.json (sample_quality) and {evaluated.run}/eval/closest_pairs.png" in out

    assert record["samples"] == {"num": 40, "sampler": "dpm++sde", "steps": 3, "spacing": "linspace", "nfe": 3,
                                 "network_passes": 3, "seed": 0, "weights": "EMA", "clip": "static", "trained_steps_T": 20}
    assert record["features"]["sha256"] == own["sha256"] and record["features"]["name"] == "own-classifier"
    assert record["reference"]["num_images"] == 1617 and record["reference"]["statistics"] == "computed"
    assert record["frechet_distance"] > 0 and record["kid"]["subset_size"] == 40 and 0 <= record["precision"] <= 1
    assert 0 <= record["memorisation"]["near_copy_fraction"] <= 1 and record["memorisation"]["expected_without_copying"] == 0.01
    assert record["memorisation"]["picture"] == str(evaluated.run / "eval" / "closest_pairs.png")
    # the closest pairs: 8 samples above their nearest training images, a labelled table
    pairs = picture(evaluated.run / "eval" / "closest_pairs.png")
    assert pairs.width > 3 * pairs.height
    assert own["heldout_accuracy"] > 0.9 and own["data"]["num_images"] == 1617


def test_a_second_evaluation_reuses_the_features_and_the_cached_statistics(evaluated, eval_cache, capsys):
    run = evaluated.run
    weights = (run / "features" / "own.safetensors").read_bytes()
    before = own_records(run)
    assert not [r for r in before if r["samples"]["seed"] == 1]
    assert main(["evaluate", "--run", str(run), "-n", "40", "--steps", "3", "--seed", "1"]) == 0
    out = capsys.readouterr().out
    assert "training the own" not in out and "computing" not in out
    assert (run / "features" / "own.safetensors").read_bytes() == weights
    records = own_records(run)
    seed_1 = [r for r in records if r["samples"]["seed"] == 1 and r["samples"]["num"] == 40 and r["samples"]["steps"] == 3]
    assert len(seed_1) == 1 and seed_1[0]["reference"]["statistics"] == "cached"
    assert evaluated.record in records  # the first evaluation's record is kept beside it
    assert len(records) == len(before) + 1
    # the same settings again replace their record instead of adding one
    assert main(["evaluate", "--run", str(run), "-n", "40", "--steps", "3", "--seed", "1"]) == 0
    assert len(own_records(run)) == len(records)


def test_inception_path_end_to_end_with_random_weights(digits_run, tmp_path, monkeypatch, capsys):
    """Wiring only: a randomly initialised FID network saved in pytorch-fid's layout, 8 real
    images as the reference, inputs at 75 px (test_features runs the network at 299)."""
    run = shutil.copytree(digits_run, tmp_path / "run")
    torch.manual_seed(0)
    torch.save(FIDInceptionV3().state_dict(), tmp_path / "pt_inception-2015-12-05-6726825d.pth")
    monkeypatch.setattr(reference, "MAX_REAL", 8)
    monkeypatch.setattr(features, "INCEPTION_SIZE", 75)  # the smallest input the network takes: wiring, not values
    argv = ["evaluate", "--run", str(run), "-n", "5", "--steps", "2", "--features", "inception",
            "--inception-weights", str(tmp_path / "pt_inception-2015-12-05-6726825d.pth")]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "\n  FID " in out and "TF1 resize_bilinear (align_corners=False, no half-pixel centres)" in out
    assert "papers use 50,000 samples, so this is not comparable with their FIDs" in out
    record = json.loads((run / "metrics.json").read_text())["sample_quality"][-1]
    assert record["features"]["name"] == "inception-v3-2015-12-05" and record["reference"]["num_images"] == 8
    assert record["features"]["resize"] == "bilinear to 299x299 (TF1 resize_bilinear, align_corners=False, no half-pixel centres) from uint8"
    assert "seeded subset of 8 of the 1,617 images" in record["reference"]["what"]


@pytest.mark.parametrize(
    "argv, message",
    [
        (["-n", "3"], "--num-samples must be more than 3"),
        (["--sampler", "euler"], "unknown sampler 'euler'; choose one of: ddpm, ddim"),
        (["--steps", "21"], r"--steps must lie in 1\.\.20"),
        (["--features", "clip"], "unknown --features 'clip'; choose one of: own, inception"),
        (["--features", "inception", "--inception-weights", "/nonexistent.pth"], "no such file"),
        (["--features", "inception"], "no Inception weights found: ddpmkit never downloads them"),
        (["--inception-weights", "/nonexistent.pth"], "--inception-weights goes with --features inception"),
        (["--nll", "vlb", "--sampler", "ddim"], "--nll measures the likelihood only; drop --sampler"),
        (["--nll", "vlb", "--num-images", "0"], "--num-images must be a positive integer, got 0"),
        (["--guidance", "2"], "--guidance needs a conditional model"),
    ],
)
def test_bad_evaluate_input_is_one_line(digits_run, argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    before = (digits_run / "metrics.json").read_bytes() if (digits_run / "metrics.json").exists() else None
    assert main(["evaluate", "--run", str(digits_run), *argv]) == 2
    one_line_error(capsys.readouterr().err, message)
    assert ((digits_run / "metrics.json").read_bytes() if (digits_run / "metrics.json").exists() else None) == before


# ---- 2-D runs --------------------------------------------------------------------------------------
def test_evaluate_2d_run_gives_distribution_distances(toy_run, capsys):
    assert main(["evaluate", "--run", str(toy_run), "-n", "300", "--steps", "10"]) == 0
    out = capsys.readouterr().out
    assert "samples:   300 from dpm++sde with 10 steps = 10 network evaluations each" in out
    assert "reference: 300 fresh moons points" in out and "\n  MMD²" in out and "\n  sliced W2" in out
    metrics = json.loads((toy_run / "metrics.json").read_text())
    record = metrics["sample_quality"][-1]
    assert record["kind"] == "points" and np.isfinite(record["mmd"]) and record["sliced_wasserstein"] > 0
    assert "mmd" in metrics  # what training wrote is kept


def test_inception_features_on_a_2d_run_are_refused(toy_run, capsys):
    assert main(["evaluate", "--run", str(toy_run), "--features", "inception"]) == 2
    one_line_error(capsys.readouterr().err, "--features, --inception-weights or --ref needs an image run: moons is 2-D data; its measures are distances to fresh points")


# ---- likelihood ---------------------------------------------------------------------------------------
def test_evaluate_writes_the_bound_to_metrics_json(toy_run, capsys):
    assert main(["evaluate", "--run", str(toy_run), "--nll", "vlb", "--num-images", "64"]) == 0
    out = capsys.readouterr().out
    assert "NLL (variational bound, 50 terms)" in out and "64 fresh moons points (held out)" in out
    metrics = json.loads((toy_run / "metrics.json").read_text())
    assert np.isfinite(metrics["nll_vlb_bpd"]) and metrics["nll_vlb_examples"] == 64
    assert "mmd" in metrics  # merged with what training wrote, not replaced


def test_evaluate_ode_likelihood_beside_the_bound(toy_run, capsys):
    assert main(["evaluate", "--run", str(toy_run), "--nll", "both", "--num-images", "64", "--ode-points", "20"]) == 0
    out = capsys.readouterr().out
    # λ-spacing on the linear schedule at T = 50 asks for one timestep twice: 19 distinct of 20
    used = len(lambda_grid(NoiseSchedule.from_name("linear", 50), 20))
    assert used == 19
    assert "NLL (variational bound, 50 terms)" in out
    assert "NLL (probability-flow ODE, 19 distinct timesteps of 20 asked for)" in out
    metrics = json.loads((toy_run / "metrics.json").read_text())
    assert np.isfinite(metrics["nll_ode_bpd"]) and np.isfinite(metrics["nll_vlb_bpd"]) and metrics["nll_ode_examples"] == 64
    assert metrics["nll_ode_steps"] == used and metrics["nll_vlb_steps"] == 50
    bad = subprocess.run([sys.executable, "-m", "ddpmkit", "evaluate", "--run", str(toy_run), "--nll", "ode", "--ode-points", "1"],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "--ode-points must be at least 2" in bad.stderr


def test_nll_of_a_digits_run_is_measured_on_its_held_out_images(digits_run, capsys):
    """The default digits run holds 10% (180 images) out of training; evaluate --nll scores those."""
    assert main(["evaluate", "--run", str(digits_run), "--nll", "vlb", "--num-images", "500"]) == 0
    assert "on the first 180 held-out images of digits (never trained on)" in capsys.readouterr().out
    metrics = json.loads((digits_run / "metrics.json").read_text())
    assert metrics["nll_vlb_examples"] == 180 and np.isfinite(metrics["nll_vlb_bpd"])
    assert metrics["nll_vlb_unit"] == "bits/dim (discretised 8-bit decoder)"
