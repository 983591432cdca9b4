"""`ddpmkit compare-samplers` (api.compare) end to end: every sampler at every step count, with
its network evaluations, quality and time, in compare.json, compare.png and a printed table."""

import json
import re

import numpy as np
import pytest

from ddpmkit.cli import main
from ddpmkit.samplers import SAMPLERS

from helpers import assert_drawn, one_line_error


def test_compare_samplers_on_a_tiny_run(toy_run, tmp_path, capsys):
    assert main(["compare-samplers", "--run", str(toy_run), "--steps", "2,5", "-n", "50", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^sampler\s+steps\s+NFE\s+mmd\s+ms/sample$", out, re.MULTILINE), out
    assert f"wrote {tmp_path}/compare.json and compare.png" in out
    assert_drawn(tmp_path / "compare.png")
    record = json.loads((tmp_path / "compare.json").read_text())
    assert record["samples_per_setting"] == 50 and record["skipped_steps"] == [] and record["measure"] == "distance to fresh points"
    rows = {(r["sampler"], r["steps"]): r for r in record["results"]}
    assert set(rows) == {(name, k) for name in ("ddpm", "ddim", "dpm++", "dpm++sde", "heun") for k in (2, 5)}
    assert list(SAMPLERS) == ["ddpm", "ddim", "dpm++", "dpm++sde", "heun"]  # the default: every sampler
    for (name, k), row in rows.items():
        # one network evaluation per step; Heun's corrector adds one on all but the first and last
        assert row["nfe"] == (2 * k - 2 if name == "heun" else k), row
        assert 0 < row["ms_per_sample"] < 1000 and np.isfinite(row["mmd"]) and np.isfinite(row["sliced_wasserstein"])
        assert re.search(rf"^{re.escape(name)}\s+{k}\s+{row['nfe']}\s", out, re.MULTILINE), (name, k)  # a table row


def test_compare_samplers_skips_step_counts_above_t(toy_run, tmp_path, capsys):
    """The default --steps 10,20,50,100,1000 on a run with T = 50: 100 and 1000 are skipped."""
    assert main(["compare-samplers", "--run", str(toy_run), "--samplers", "ddim", "-n", "20", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "note: skipping --steps 100, 1000: above the run's T = 50" in out
    record = json.loads((tmp_path / "compare.json").read_text())
    assert [r["steps"] for r in record["results"]] == [10, 20, 50] and record["skipped_steps"] == [100, 1000]
    assert main(["compare-samplers", "--run", str(toy_run), "--steps", "100,1000", "--out", str(tmp_path / "none")]) == 2
    one_line_error(capsys.readouterr().err, r"every --steps count \(100, 1000\) is above the run's T = 50; give counts in 1\.\.50")
    assert not (tmp_path / "none" / "compare.json").exists()


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--samplers", "ddim,euler"], "unknown sampler 'euler'; choose one of: ddpm, ddim"),
        (["--steps", "0,5"], "--steps must be positive step counts, got 0"),
        (["--steps", "5,x"], "--steps takes comma-separated integers, got '5,x'"),
        (["-n", "1"], "-n must be at least 2, got 1"),
    ],
)
def test_bad_compare_input_is_one_line(toy_run, argv, message, tmp_path, capsys):
    assert main(["compare-samplers", "--run", str(toy_run), "--out", str(tmp_path / "c"), *argv]) == 2
    one_line_error(capsys.readouterr().err, message)
    assert not (tmp_path / "c").exists()


def test_compare_samplers_measures_image_runs_in_own_features(evaluated, eval_cache, tmp_path, capsys):
    assert main(["compare-samplers", "--run", str(evaluated.run), "--samplers", "ddim", "--steps", "2,4", "-n", "20",
                 "--out", str(tmp_path)]) == 0
    assert re.search(r"^sampler\s+steps\s+NFE\s+frechet_distance\s+ms/sample$", capsys.readouterr().out, re.MULTILINE)
    record = json.loads((tmp_path / "compare.json").read_text())
    results = record["results"]
    assert [r["steps"] for r in results] == [2, 4] and all(r["frechet_distance"] > 0 for r in results)
    assert {"confidence", "class_entropy"} <= set(results[0]) and all(r["num_samples"] == 20 for r in results)
    assert "own-classifier features" in record["measure"] and evaluated.own["sha256"][:12] in record["measure"]
    assert_drawn(tmp_path / "compare.png")
