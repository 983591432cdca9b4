"""evaluation.record: metrics.json (its one writer) and the report the CLI prints of a record."""

import json

from ddpmkit.evaluation import format_report, read_metrics, write_metrics, write_quality_record


def points_record(seed=0, mmd=0.001, **samples) -> dict:
    s = {"num": 100, "sampler": "ddim", "steps": 10, "nfe": 10, "network_passes": 10, "seed": seed, "weights": "EMA",
         "clip": "none", "trained_steps_T": 50, **samples}
    return {"kind": "points", "samples": s, "reference": {"what": "100 fresh moons points"}, "space": "normalised",
            "mmd": mmd, "sliced_wasserstein": 0.05, "precision": 0.9, "recall": 0.8, "k": 3, "note": "compare at equal N"}


def test_scalar_measurements_merge_into_metrics_json(tmp_path):
    assert read_metrics(tmp_path) == {}
    write_metrics(tmp_path, {"mmd": 0.1, "sliced_wasserstein": 0.2})
    whole = write_metrics(tmp_path, {"nll_vlb_bpd": 1.5, "mmd": 0.05})
    assert whole == {"mmd": 0.05, "sliced_wasserstein": 0.2, "nll_vlb_bpd": 1.5}
    assert json.loads((tmp_path / "metrics.json").read_text()) == whole == read_metrics(tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]  # written atomically: no temporary left


def test_a_quality_record_replaces_only_the_record_of_the_same_settings(tmp_path):
    write_metrics(tmp_path, {"mmd": 0.1})
    write_quality_record(tmp_path, points_record(seed=0, mmd=1.0))
    write_quality_record(tmp_path, points_record(seed=1, mmd=2.0))
    content = write_quality_record(tmp_path, points_record(seed=0, mmd=3.0))  # the same settings as the first
    assert [(r["samples"]["seed"], r["mmd"]) for r in content["sample_quality"]] == [(1, 2.0), (0, 3.0)]
    content = write_quality_record(tmp_path, points_record(seed=0, mmd=4.0, guidance=2.0))  # guided: another setting
    assert len(content["sample_quality"]) == 3 and content["mmd"] == 0.1 and read_metrics(tmp_path) == content


def test_the_report_names_what_makes_each_number_comparable():
    lines = format_report(points_record())
    assert lines[0] == "samples:   100 from ddim with 10 steps = 10 network evaluations each (T = 50), seed 0, EMA weights"
    assert lines[1] == "reference: 100 fresh moons points" and lines[2] == "space:     normalised"
    names = [line.split()[0] for line in lines[3:-1]]
    assert names == ["MMD²", "sliced", "precision", "recall"] and lines[-1] == "note:      compare at equal N"
    assert "0.00100" in lines[3] and "0.0500" in lines[4] and "0.900" in lines[5] and "0.800" in lines[6]


def test_the_report_counts_network_passes_under_guidance():
    record = points_record(network_passes=20, labels="balanced over 2 classes", guidance=2.0)
    line = format_report(record)[0]
    assert "= 10 network evaluations each (20 network passes: guidance runs the conditional and the unconditional model)" in line
    assert line.endswith("labels balanced over 2 classes, guidance 2")
