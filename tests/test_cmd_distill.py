"""`ddpmkit distill` (api.distill, training/distill.py) end to end on the tiny 2-D run: a round of progressive
distillation does what it is for, the target is Algorithm 2's, an interrupted distillation resumes
to the very weights of an uninterrupted one, the student samples on its recorded grid by default,
and bad input is one line with exit code 2."""

import json
import shutil

import numpy as np
import pytest
import torch

from ddpmkit import api, checkpoint
from ddpmkit._tensor import randn_like
from ddpmkit.build import load_run
from ddpmkit.cli import main
from ddpmkit.training import distill
from ddpmkit.training.distill import DistillSettings
from ddpmkit.samplers import SAMPLERS, ddim
from ddpmkit.schedules import NoiseSchedule, timestep_grid

from helpers import one_line_error


def _ddim(run, grid, n=512, seed=7):
    """The run's deterministic DDIM on an explicit grid from fixed noise, in model space."""
    x_T = randn_like(torch.empty(run.modality.sample_shape(n)), torch.Generator().manual_seed(seed))
    return SAMPLERS["ddim"](run.denoiser, x_T, torch.as_tensor(grid))


def test_the_target_makes_one_student_step_land_on_the_teachers_two():
    """Algorithm 2: one DDIM step from z_t with x̂ = x̃ reaches z_t'', also when t'' is the data."""
    abar = NoiseSchedule.from_name("cosine", 100).alphas_cumprod.float()
    g = torch.Generator().manual_seed(0)
    z, z2 = torch.randn(4, 2, generator=g), torch.randn(4, 2, generator=g)
    for abar_t, abar_t2 in ((abar[90], abar[40]), (abar[30], torch.tensor(1.0))):
        x_tilde = distill.distill_target(z, z2, abar_t, abar_t2)
        eps = (z - abar_t.sqrt() * x_tilde) / (1 - abar_t).sqrt()  # ε̂ implied by x̃ at z_t
        assert torch.allclose(ddim.update(x_tilde, eps, abar_t2), z2, atol=1e-5)
    assert torch.allclose(distill.truncated_snr_weight(torch.tensor([0.2, 0.5, 0.9])), torch.tensor([1.0, 1.0, 9.0]))


@pytest.fixture(scope="module")
def v_teacher(tmp_path_factory):
    """A 2-D run predicting v, trained long enough (300 steps, T = 50) for a DDIM sampler that
    stays on the data: an ε-network's x̂_0 = (x_t − σ·ε̂)/α at ᾱ_T ≈ 0 multiplies its error by
    σ/α (360× here) and nothing clips 2-D points, so its few-step DDIM outputs are far off the data."""
    out = tmp_path_factory.mktemp("v-teacher") / "moons"
    assert main(["train", "--data", "moons", "--out", str(out), "--steps", "300", "--timesteps", "50", "--num-points", "2000",
                 "--batch-size", "128", "--prediction", "v", "--no-progress"]) == 0
    return out


def test_a_round_brings_the_students_half_steps_closer_to_the_teacher(v_teacher, tmp_path):
    """What distillation is for: on fixed noise the student's N/2-step DDIM output is closer to the
    teacher's N-step output than the teacher's own N/2-step output is."""
    settings = DistillSettings(to_steps=4, start_steps=8, rounds_steps=100, batch_size=256, lr=1e-3)
    rounds = api.distill(v_teacher, tmp_path / "d", settings, progress=False)
    assert [(r["teacher_steps"], r["student_steps"]) for r in rounds] == [(8, 4)]
    teacher, student = load_run(v_teacher), load_run(tmp_path / "d")
    T = teacher.config.diffusion.num_steps
    grid = timestep_grid(T, 8)
    assert student.fixed.timesteps == tuple(grid[::2].tolist()) and student.config.diffusion.prediction == "v"
    reference = _ddim(teacher, grid)
    own_half = (_ddim(teacher, grid[::2]) - reference).norm(dim=1).mean()
    distilled = (_ddim(student, grid[::2]) - reference).norm(dim=1).mean()
    assert distilled < 0.25 * own_half, (float(distilled), float(own_half))


def _interrupt_at(monkeypatch, step):
    """Make the `step`-th optimiser step (counted over the session, one loss per step) raise, as a
    kill would stop it: a fake objective, the round's own with a counter, in its place."""
    calls = {"n": 0}

    class Interrupted(distill.DistillRound):
        def losses(self, batch):
            calls["n"] += 1
            if calls["n"] == step:
                raise KeyboardInterrupt
            return super().losses(batch)

    monkeypatch.setattr(distill, "DistillRound", Interrupted)


def test_an_interrupted_distillation_resumes_to_the_uninterrupted_weights(toy_run, tmp_path, monkeypatch):
    """Killed inside round 1 (resumes from its step-4 checkpoint) and again inside round 2 (from
    step 14, past the round's end at 10): the finished student is bit for bit the uninterrupted one."""
    settings = DistillSettings(to_steps=2, start_steps=8, rounds_steps=10, checkpoint_every=4, batch_size=32)
    whole = api.distill(toy_run, tmp_path / "whole", settings, progress=False)
    out = tmp_path / "killed"
    with monkeypatch.context() as m:
        _interrupt_at(m, 7)
        with pytest.raises(KeyboardInterrupt):
            api.distill(toy_run, out, settings, progress=False)
    assert checkpoint.checkpoint_step(checkpoint.newest_checkpoint(out)) == 4
    with monkeypatch.context() as m:
        _interrupt_at(m, 11)  # the 11th step of this session: global step 4 + 11 = 15
        with pytest.raises(KeyboardInterrupt):
            api.distill(toy_run, out, settings, progress=False)  # the same command again continues it
    assert checkpoint.checkpoint_step(checkpoint.newest_checkpoint(out)) == 14
    resumed = api.distill(None, out, resume=True, progress=False)
    assert [r["student_steps"] for r in resumed] == [r["student_steps"] for r in whole] == [4, 2]
    for name in ("ema.safetensors", "model.safetensors"):
        assert checkpoint.weights_sha256(checkpoint.load_weights(out / name)) == \
            checkpoint.weights_sha256(checkpoint.load_weights(tmp_path / "whole" / name)), name
    record = json.loads((out / "distill.json").read_text())
    assert record["complete"] and record["steps"] == 2 and record["grid"] == timestep_grid(50, 8)[::4].tolist()
    assert [r["step"] for r in map(json.loads, (out / "log.jsonl").read_text().splitlines())] == [10, 20]


def test_the_student_samples_by_default_on_its_recorded_grid(toy_run, tmp_path, capsys):
    settings = DistillSettings(to_steps=4, start_steps=8, rounds_steps=5, batch_size=32)
    api.distill(toy_run, tmp_path / "d", settings, progress=False)
    assert main(["sample", "--run", str(tmp_path / "d"), "-n", "64", "--seed", "3", "--out", str(tmp_path / "s")]) == 0
    run = load_run(tmp_path / "d")
    grid = json.loads((tmp_path / "d" / "distill.json").read_text())["grid"]
    assert grid != timestep_grid(50, 4).tolist()  # the recorded grid, not a fresh 4-step one
    x_T = randn_like(torch.empty(64, 2), torch.Generator().manual_seed(3))
    expected = run.modality.to_data_space(ddim.sample(run.denoiser, x_T, torch.tensor(grid)))
    assert np.array_equal(np.load(tmp_path / "s" / "samples.npy"), expected)
    assert "note:" not in capsys.readouterr().out
    # another step count is allowed, and said to be off the distilled grid
    assert main(["sample", "--run", str(tmp_path / "d"), "-n", "8", "--steps", "8", "--out", str(tmp_path / "s8")]) == 0
    assert "was distilled for ddim on 4 steps" in capsys.readouterr().out


@pytest.mark.parametrize("argv,pattern", [
    (["--to-steps", "3"], r"--start-steps 64 must be --to-steps 3 times a power of two"),
    (["--to-steps", "4", "--start-steps", "48"], r"must be --to-steps 4 times a power of two"),
    (["--to-steps", "4", "--start-steps", "4"], r"times a power of two"),
    (["--start-steps", "64", "--to-steps", "2", "--rounds-steps", "0"], r"--rounds-steps"),
    (["--start-steps", "128"], r"--start-steps 128 is more than the run's T = 50"),
])
def test_bad_settings_are_one_line_and_write_nothing(toy_run, tmp_path, capsys, argv, pattern):
    code = main(["distill", "--run", str(toy_run), "--out", str(tmp_path / "d"), "--no-progress", *argv])
    assert code == 2
    one_line_error(capsys.readouterr().err, pattern)
    assert not (tmp_path / "d").exists() or not any((tmp_path / "d").iterdir())


def test_bad_outputs_are_one_line(toy_run, tmp_path, capsys):
    run_copy = tmp_path / "run"
    shutil.copytree(toy_run, run_copy)
    cases = [
        (["--run", str(toy_run), "--out", str(run_copy)], r"--out .* is a run directory"),
        (["--run", str(toy_run)], r"distill needs --run RUN .* and --out OUT"),
        (["--resume", str(run_copy)], r"holds no distillation \(no distill.json\)"),
        (["--resume", str(run_copy), "--to-steps", "2"], r"--resume continues a distillation .* drop --to-steps"),
    ]
    for argv, pattern in cases:
        assert main(["distill", "--no-progress", *argv]) == 2, argv
        one_line_error(capsys.readouterr().err, pattern)
    settings = ["--to-steps", "4", "--start-steps", "8", "--rounds-steps", "2", "--batch-size", "16"]
    out = str(tmp_path / "d")
    assert main(["distill", "--run", str(toy_run), "--out", out, "--no-progress", *settings]) == 0
    capsys.readouterr()
    assert main(["distill", "--run", str(toy_run), "--out", out, "--no-progress", *settings[:-1], "32"]) == 2
    one_line_error(capsys.readouterr().err, r"distilled with other settings \(batch_size\)")
