import json
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest

from ddpmkit.cli import main
from ddpmkit.likelihood import lambda_grid
from ddpmkit.schedules import NoiseSchedule

TINY = ["--steps", "30", "--timesteps", "50", "--num-points", "500", "--batch-size", "64", "--log-every", "10", "--no-progress"]


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "moons"
    assert main(["train", "--data", "moons", "--out", str(out), "--schedule", "linear", "--loss", "huber", *TINY]) == 0
    return out


def test_train_writes_every_file(toy_run):
    for name in ("config.json", "model.safetensors", "ema.safetensors", "state.pt", "log.jsonl",
                 "forward.png", "reverse.png", "loss.png", "diffusion.gif", "samples.png"):
        assert (toy_run / name).stat().st_size > 0, name
    config = json.loads((toy_run / "config.json").read_text())
    assert config["diffusion"]["schedule"] == "linear" and config["diffusion"]["loss"] == "huber"
    assert config["diffusion"]["num_steps"] == 50 and config["net"]["kind"] == "mlp"
    log = [json.loads(line) for line in (toy_run / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [10, 20, 30]
    assert {"loss", "loss_q0", "loss_q1", "loss_q2", "loss_q3", "grad_norm", "lr", "nonfinite"} <= set(log[0])


def test_sample_writes_points_in_data_space_and_prints_distances(toy_run, tmp_path, capsys):
    assert main(["sample", "--run", str(toy_run), "-n", "300", "--out", str(tmp_path), "--seed", "5"]) == 0
    points = np.load(tmp_path / "samples.npy")
    assert points.shape == (300, 2) and points.dtype == np.float32
    assert (tmp_path / "samples.png").stat().st_size > 0
    assert "MMD²" in capsys.readouterr().out
    # same seed, same samples; the --no-ema weights differ
    main(["sample", "--run", str(toy_run), "-n", "300", "--out", str(tmp_path / "again"), "--seed", "5"])
    assert np.array_equal(points, np.load(tmp_path / "again" / "samples.npy"))
    main(["sample", "--run", str(toy_run), "-n", "300", "--out", str(tmp_path / "live"), "--seed", "5", "--no-ema"])
    assert not np.array_equal(points, np.load(tmp_path / "live" / "samples.npy"))


@pytest.mark.parametrize(
    "argv, message",
    [
        (["train", "--data", "spirals"], "unknown dataset 'spirals'.*moons, swiss-roll"),
        (["train", "--data", "moons", "--schedule", "warp"], "unknown schedule 'warp'; choose one of: linear, cosine"),
        (["train", "--data", "moons", "--loss", "l3"], "unknown loss 'l3'; choose one of: l2, l1, huber"),
        (["train", "--data", "moons", "--timesteps", "0"], "--timesteps.* must be a positive integer"),
        (["train", "--data", "moons", "--steps", "-5"], "--steps must be a positive integer"),
        (["train", "--data", "moons", "--batch-size", "0"], "--batch-size must be a positive integer"),
        (["sample", "--run", "/nonexistent/run"], "does not exist"),
        (["train", "--data", "moons", "--holdout", "0.1"], "--holdout applies to image data; 2-D runs are scored on fresh points"),
        (["train", "--holdout", "1"], r"--holdout is the share of images kept out of training, in \[0, 1\)"),
    ],
)
def test_bad_input_is_one_line_with_exit_code_2(argv, message, capsys, tmp_path):
    assert main([*argv, *(["--out", str(tmp_path / "x")] if argv[0] == "train" else [])]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert re.search(message, err), err
    assert not (tmp_path / "x" / "model.safetensors").exists()


def test_run_directory_without_config(tmp_path, capsys):
    (tmp_path / "model.safetensors").write_bytes(b"")
    assert main(["sample", "--run", str(tmp_path)]) == 2
    assert "no config.json" in capsys.readouterr().err
    assert main(["train", "--resume", str(tmp_path)]) == 2
    assert "not a ddpmkit run" in capsys.readouterr().err


def _one_line_error(capsys, pattern: str) -> None:
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err and re.search(pattern, err), err


def _files(run):
    return {p.relative_to(run): p.read_bytes() for p in sorted(run.rglob("*")) if p.is_file()}


def test_resume_without_a_complete_checkpoint_writes_nothing(toy_run, tmp_path, capsys):
    run = tmp_path / "stopped"  # training stopped before its first checkpoint was complete
    (run / "checkpoints" / "step-00000010").mkdir(parents=True)  # no meta.json: not complete
    shutil.copy(toy_run / "config.json", run / "config.json")
    before = _files(run)
    assert main(["train", "--resume", str(run), "--steps", "60", "--no-progress"]) == 2
    _one_line_error(capsys, r"stopped has no complete checkpoint to resume from.*; start a new run with --out")
    assert _files(run) == before and sorted(p.name for p in run.rglob("*")) == ["checkpoints", "config.json", "step-00000010"]


def test_resume_of_weights_that_do_not_fit_config_json_writes_nothing(toy_run, tmp_path, capsys):
    run = tmp_path / "edited"
    shutil.copytree(toy_run, run)
    config = json.loads((run / "config.json").read_text())
    config["net"]["hidden"] *= 2  # the checkpoint was trained with the old width
    (run / "config.json").write_text(json.dumps(config))
    before = _files(run)
    assert main(["train", "--resume", str(run), "--steps", "60", "--no-progress"]) == 2
    _one_line_error(capsys, r"weights in \S*step-00000030\S*model.safetensors do not fit the model config.json "
                            r"describes \(shape differs: .*\); was config.json edited\?")
    assert _files(run) == before


def test_existing_run_is_not_overwritten(toy_run, capsys):
    before = (toy_run / "model.safetensors").read_bytes()
    assert main(["train", "--data", "moons", "--out", str(toy_run), *TINY]) == 2
    assert "already holds a run" in capsys.readouterr().err
    assert (toy_run / "model.safetensors").read_bytes() == before


def test_console_script_help_and_exit_code():
    for cmd in ([], ["train"], ["sample"]):
        out = subprocess.run([sys.executable, "-m", "ddpmkit", *cmd, "--help"], capture_output=True, text=True)
        assert out.returncode == 0 and "usage: ddpmkit" in out.stdout
    assert "--schedule" in subprocess.run([sys.executable, "-m", "ddpmkit", "train", "--help"], capture_output=True, text=True).stdout
    bad = subprocess.run([sys.executable, "-m", "ddpmkit", "sample", "--run", "/nope"], capture_output=True, text=True)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr and bad.stderr.count("\n") == 1


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


def test_sample_spacing_chooses_the_timestep_grid(toy_run, tmp_path):
    from ddpmkit import api
    from ddpmkit.build import load_run
    from ddpmkit.schedules import timestep_grid

    run = load_run(toy_run)
    grids = {}
    for spacing in ("linspace", "leading", "trailing"):
        drawn = api.draw(run, 16, sampler="ddim", steps=5, spacing=spacing, keep=list(range(50)), seed=1)
        grids[spacing] = drawn.trajectory.steps
        assert drawn.trajectory.steps == timestep_grid(50, 5, spacing).tolist()
    assert grids["leading"][0] < 49 == grids["trailing"][0] == grids["linspace"][0]  # leading never starts at T-1
    assert main(["sample", "--run", str(toy_run), "-n", "20", "--out", str(tmp_path), "--sampler", "dpm++",
                 "--steps", "5", "--spacing", "trailing"]) == 0
    assert np.load(tmp_path / "samples.npy").shape == (20, 2)


def test_compare_samplers_on_a_tiny_run(toy_run, tmp_path, capsys):
    assert main(["compare-samplers", "--run", str(toy_run), "--steps", "2,5", "-n", "50", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^sampler\s+steps\s+NFE\s+mmd\s+ms/sample$", out, re.MULTILINE), out
    assert (tmp_path / "compare.png").stat().st_size > 0
    record = json.loads((tmp_path / "compare.json").read_text())
    assert record["samples_per_setting"] == 50 and record["skipped_steps"] == []
    rows = {(r["sampler"], r["steps"]): r for r in record["results"]}
    assert set(rows) == {(name, k) for name in ("ddpm", "ddim", "dpm++", "dpm++sde", "heun") for k in (2, 5)}
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
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "every --steps count (100, 1000) is above the run's T = 50" in err
    assert not (tmp_path / "none" / "compare.json").exists()


def test_eta_with_a_sampler_other_than_ddim_is_a_one_line_error(toy_run, tmp_path, capsys):
    assert main(["sample", "--run", str(toy_run), "--sampler", "ddpm", "--eta", "0.5", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert "--eta applies to --sampler ddim only, not ddpm" in err
    assert not (tmp_path / "samples.npy").exists()
