"""Fault injection through the command line: every failure ends in one line on stderr with
no traceback, the right exit code (2 bad input, 1 runtime fault, 130 interrupt), and nothing
that existed before changed. The real failures are made where they can be: a full or
read-only file system is a small tmpfs mounted for the test (root only; elsewhere the write
calls raise the same OSError), damaged and malicious state.pt files are written to disk.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import hashlib
import os
import shutil
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from ddpmkit import checkpoint, cli, rundir
from ddpmkit.build import build_denoiser, build_net
from ddpmkit.config import DiffusionConfig, RunConfig, TrainConfig
from ddpmkit.denoiser import GuidedDenoiser
from ddpmkit.errors import UserError
from ddpmkit.nets.mlp import MLPConfig
from ddpmkit.training import diffusion

from helpers import hook_trainers, stop_at

# A tiny 2-D run: 10 steps, checkpoints at 5 and 10 (a few seconds, the pictures included).
TRAIN = ["train", "--data", "moons", "--num-points", "256", "--width", "16", "--batch-size", "32", "--steps", "10",
         "--checkpoint-every", "5", "--log-every", "5", "--no-progress"]


def cli_run(capsys, *argv) -> tuple[int, str, str]:
    """ddpmkit's main in this process: (exit code, stdout, stderr)."""
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def one_error_line(err: str) -> str:
    """The single stderr line of a refused command (no traceback, no usage block)."""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def tree(path: Path) -> dict[str, str]:
    """Every file and folder under `path`, relative, with the hash of each file's bytes."""
    return {str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
            for p in sorted(Path(path).rglob("*"))}


def ema_digest(run_dir: Path) -> str:
    return checkpoint.weights_sha256(checkpoint.load_weights(Path(run_dir) / "ema.safetensors"))


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("faults") / "run"
    assert cli.main([*TRAIN, "--out", str(run)]) == 0
    return run


@pytest.fixture
def run_copy(toy_run, tmp_path) -> Path:
    """A copy of the toy run a test may damage."""
    copy = tmp_path / "run"
    shutil.copytree(toy_run, copy)
    return copy


@pytest.fixture(autouse=True)
def _in_tmp_cwd(tmp_path, monkeypatch):
    """Each test runs in an empty folder, so that a file created by mistake is seen."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    monkeypatch.delenv("DDPMKIT_DEBUG", raising=False)
    yield
    assert list(cwd.iterdir()) == [], "a refused command wrote into the working directory"


@contextlib.contextmanager
def tmpfs(path: Path, size: str = "16m"):
    """A tmpfs of `size` mounted at `path`; yields False (nothing mounted) where mounting is not allowed."""
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0 or shutil.which("mount") is None:
        yield False
        return
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True)
    if mounted.returncode:
        yield False
        return
    try:
        yield True
    finally:
        subprocess.run(["umount", "-l", str(path)], check=True)


def remount(path: Path, options: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{options}", str(path)], check=True)


# ---- 2. non-finite numbers, for every float option of every command ----------------------------------------
def float_option_cases():
    """(command, option) for every type=float option of every command the parser has, so that
    an option or command added later is covered without editing this test."""
    p = cli.parser()
    commands = next(a for a in p._actions if isinstance(a, argparse._SubParsersAction)).choices
    return [(name, cli.option_name(a)) for name, command in commands.items() for a in cli.float_options(command)]


def test_the_parsers_have_float_options():
    found = set(float_option_cases())
    assert {("train", "--lr"), ("train", "--min-snr-gamma"), ("sample", "--guidance"), ("sample", "--eta")} <= found


@pytest.mark.parametrize("command,option", float_option_cases())
@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_every_float_option_refuses_non_finite(command, option, value, toy_run, tmp_path, capsys):
    before = tree(toy_run)
    p = cli.command_parser(cli.parser(), command)
    required = [a for a in p._actions if a.required and a.option_strings]
    argv = [command, *(x for a in required for x in (cli.option_name(a), toy_run if a.dest == "run" else "x"))]
    if any(a.dest == "out" for a in p._actions):
        argv += ["--out", tmp_path / "new"]
    code, out, err = cli_run(capsys, *argv, f"{option}={value}")
    assert code == 2
    line = one_error_line(err)
    assert option in line and "finite" in line, line
    assert tree(toy_run) == before and not (tmp_path / "new").exists()


@pytest.mark.parametrize("make", [lambda v: DiffusionConfig(min_snr_gamma=v), lambda v: TrainConfig(lr=v),
                                  lambda v: TrainConfig(weight_decay=v), lambda v: TrainConfig(grad_clip=v),
                                  lambda v: TrainConfig(p_uncond=v)])
def test_configs_refuse_non_finite_numbers(make):
    """The API (no CLI) cannot put NaN or inf into config.json either."""
    for v in (float("nan"), float("inf")):
        with pytest.raises(UserError, match="finite"):
            make(v)


def test_guidance_minus_one_is_the_unconditional_model():
    """w = −1 in ε̃ = (1+w)·ε(x,c) − w·ε(x,∅) leaves ε(x,∅) alone; w < −1 is allowed (anti-guidance)."""
    config = RunConfig(net=MLPConfig(hidden=16, blocks=1, num_classes=3), diffusion=DiffusionConfig(num_steps=50))
    base = build_denoiser(config, build_net(config).eval())
    x, t, label = torch.randn(8, 2), torch.randint(0, 50, (8,)), torch.randint(0, 3, (8,))
    with torch.no_grad():
        unconditional = base(x, t, torch.full_like(label, 3)).eps
        guided = GuidedDenoiser(base, -1.0, null_label=3)(x, t, label).eps
        anti = GuidedDenoiser(base, -2.0, null_label=3)(x, t, label).eps
        conditional = base(x, t, label).eps
    torch.testing.assert_close(guided, unconditional, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(anti, 2 * unconditional - conditional, rtol=1e-5, atol=1e-5)


# ---- 4. help and messages ------------------------------------------------------------------------------------
def test_help_shows_each_default_once():
    p = cli.parser()
    for name, command in next(a for a in p._actions if isinstance(a, argparse._SubParsersAction)).choices.items():
        formatter = command._get_formatter()
        for action in command._actions:
            if action.help and action.help is not argparse.SUPPRESS:
                text = formatter._get_help_string(action) % {**vars(action), "prog": name}
                assert text.lower().count("default") <= 1, f"{name} {action.option_strings}: {text}"


def test_image_size_error_names_the_option_and_the_sizes_that_fit(tmp_path, capsys):
    code, out, err = cli_run(capsys, "train", "--image-size", "30", "--channel-mults", "1,2,2", "--out", tmp_path / "r")
    line = one_error_line(err)
    assert code == 2 and "--image-size" in line and "28 or 32" in line and "unet." not in line, line
    assert not (tmp_path / "r").exists()


def test_missing_data_prints_nothing_and_creates_nothing(tmp_path, capsys):
    code, out, err = cli_run(capsys, "train", "--data", tmp_path / "nowhere", "--out", tmp_path / "r")
    assert code == 2 and out == "" and "nowhere" in one_error_line(err)
    assert not (tmp_path / "r").exists()


def test_batch_larger_than_the_data_is_said(tmp_path, capsys):
    code, out, err = cli_run(capsys, "train", "--data", "moons", "--num-points", "50", "--batch-size", "64",
                             "--steps", "2", "--width", "8", "--no-progress", "--out", tmp_path / "r")
    assert code == 0 and "--batch-size 64 is larger than the 50 training examples" in out


def test_sample_never_replaces_a_runs_own_files(toy_run, capsys):
    before = tree(toy_run)
    code, out, err = cli_run(capsys, "sample", "--run", toy_run, "--out", toy_run, "-n", "4")
    assert code == 2 and "run directory" in one_error_line(err)
    code, out, err = cli_run(capsys, "show-forward", "--out", toy_run / "samples.png")
    assert code == 2 and "never replaces" in one_error_line(err)
    assert tree(toy_run) == before


@pytest.mark.parametrize("bad", [["--class", "3"], ["--steps", "0"], ["--sampler", "nope"], ["--guidance", "2"]])
def test_refused_sample_options_create_no_output_folder(bad, toy_run, capsys):
    before = tree(toy_run)
    code, out, err = cli_run(capsys, "sample", "--run", toy_run, "-n", "4", *bad)
    assert code == 2 and one_error_line(err)
    assert tree(toy_run) == before  # no RUN/samples folder


def test_out_naming_a_file_is_refused_before_anything(tmp_path, capsys):
    existing = tmp_path / "a-file"
    existing.write_text("mine")
    for argv in (["train", "--data", "moons", "--out", existing], ["train", "--out", existing / "run"]):
        code, out, err = cli_run(capsys, *argv)
        assert code == 2 and str(existing) in one_error_line(err) and "file" in err
    assert existing.read_text() == "mine"


# ---- 1. the file system: full, read-only ---------------------------------------------------------------------
def test_full_disk_while_checkpointing(run_copy, tmp_path, capsys, monkeypatch):
    """No space for the step-15 checkpoint: one line (exit 1) naming the fault, the intact
    checkpoint and --resume; no temporary left, nothing that existed changed but config.json
    (the new --steps) and log.jsonl (its step-15 record, dropped at the next resume); after
    space is freed --resume works."""
    disk = tmp_path / "disk"
    with tmpfs(disk, "16m") as mounted:
        run = disk / "run"
        shutil.copytree(run_copy, run)
        rundir.copy_top_level(run, checkpoint.newest_checkpoint(run))  # as training left them
        if mounted:  # room for the run and about half a checkpoint more
            used = (lambda s: (s.f_blocks - s.f_bfree) * s.f_frsize)(os.statvfs(disk))
            checkpoint_bytes = sum(f.stat().st_size for f in (run / "checkpoints" / "step-00000010").iterdir())
            remount(disk, f"size={used + checkpoint_bytes // 2}")
        else:  # no mount here: the writes of a checkpoint raise what a full disk raises
            def full(path, data):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
            monkeypatch.setattr(checkpoint, "atomic_write_bytes", full)
        before = tree(run)
        code, out, err = cli_run(capsys, "train", "--resume", run, "--steps", "15", "--no-progress")
        line = one_error_line(err)
        assert code == 1 and "no space left" in line and "step-00000010" in line and "--resume" in line, line
        # the checkpoints and weights are untouched; config.json took the new --steps, log.jsonl the step-15 record
        after, moved = tree(run), ("log.jsonl", "config.json")
        assert {k: v for k, v in after.items() if k not in moved} == {k: v for k, v in before.items() if k not in moved}
        old_config = RunConfig.load(run_copy / "config.json")
        assert RunConfig.load(run / "config.json") == replace(old_config, train=replace(old_config.train, steps=15))
        if mounted:
            remount(disk, "size=64m")
        else:
            monkeypatch.undo()
            monkeypatch.chdir(tmp_path / "cwd")
        code, out, err = cli_run(capsys, "train", "--resume", run, "--steps", "15", "--no-progress")
        assert code == 0 and "resuming from step 10" in out and "trained 5 steps (steps 10 to 15)" in out, out + err
        assert checkpoint.checkpoint_step(checkpoint.newest_checkpoint(run)) == 15


def test_read_only_output_is_refused_before_the_data_are_read(toy_run, tmp_path, capsys, monkeypatch):
    """A read-only --out: one line (exit 2) before any data are read (the data set does not
    even exist here, and that is not what is said), nothing created."""
    disk = tmp_path / "ro"
    with tmpfs(disk, "1m") as mounted:
        if mounted:
            remount(disk, "ro")
        else:
            real = os.access
            monkeypatch.setattr(os, "access", lambda p, mode: False if Path(p) == disk else real(p, mode))
        before = tree(toy_run)
        for argv in (["train", "--data", tmp_path / "no-such-data", "--out", disk / "run"],
                     ["sample", "--run", toy_run, "--out", disk / "samples", "-n", "4"]):
            code, out, err = cli_run(capsys, *argv)
            line = one_error_line(err)
            assert code == 2 and str(disk) in line and ("read-only" in line or "not writable" in line), line
            assert "no-such-data" not in line
        assert list(disk.iterdir()) == [] and tree(toy_run) == before


# ---- damaged and malicious checkpoints -----------------------------------------------------------------------
class _Payload:
    """A pickle that runs code when loaded unsafely: it would create `marker`."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_truncated_state_files_are_one_line_and_change_nothing(run_copy, capsys):
    for step in ("step-00000005", "step-00000010"):
        path = run_copy / "checkpoints" / step / "state.pt"
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    before = tree(run_copy)
    code, out, err = cli_run(capsys, "train", "--resume", run_copy, "--steps", "15")
    line = one_error_line(err)
    assert code == 2 and "no checkpoint" in line and "damaged" in line, line
    assert tree(run_copy) == before


def test_a_malicious_state_file_is_never_run_nor_advised(run_copy, tmp_path, capsys):
    marker = tmp_path / "the-payload-ran"
    for step in ("step-00000005", "step-00000010"):
        torch.save({"step": 5, "payload": _Payload(marker)}, run_copy / "checkpoints" / step / "state.pt")
    before = tree(run_copy)
    code, out, err = cli_run(capsys, "train", "--resume", run_copy, "--steps", "15")
    line = one_error_line(err)
    assert code == 2 and "never loads" in out + line and "weights_only" not in out + err, out + err
    assert not marker.exists() and tree(run_copy) == before


def test_a_corrupt_newest_checkpoint_falls_back_to_the_previous_one(run_copy, toy_run, tmp_path, capsys):
    """--resume skips a damaged step-10 (says so, keeps its bytes as damaged-step-10) and
    continues from step 5, exactly: the weights at step 10 equal those of the run that was never damaged."""
    damaged = run_copy / "checkpoints" / "step-00000010" / "model.safetensors"
    damaged.write_bytes(damaged.read_bytes()[:100])
    kept = tree(run_copy / "checkpoints" / "step-00000010")
    code, out, err = cli_run(capsys, "train", "--resume", run_copy)
    assert code == 0, err
    assert "skipping checkpoint step-00000010" in out and "resuming from step 5" in out
    assert "trained 5 steps (steps 5 to 10)" in out
    assert tree(run_copy / "checkpoints" / "damaged-step-00000010") == kept  # set aside, unchanged
    assert ema_digest(run_copy) == ema_digest(toy_run)


# ---- 3. interrupted before the first checkpoint, then restarted in place -----------------------------------------
def test_interrupt_before_the_first_checkpoint_then_resume_restarts_it(toy_run, tmp_path, capsys, monkeypatch):
    run = tmp_path / "run"
    hook_trainers(monkeypatch, stop_at(3, KeyboardInterrupt()))
    code, out, err = cli_run(capsys, *TRAIN, "--out", run)
    line = one_error_line(err)
    assert code == 130 and "no complete checkpoint" in line and f"--resume {run}" in line, line
    assert "intact" not in line
    monkeypatch.undo()
    monkeypatch.chdir(tmp_path / "cwd")
    code, out, err = cli_run(capsys, "train", "--resume", run, "--no-progress")
    assert code == 0 and "starting it again from step 0" in out, out + err
    assert ema_digest(run) == ema_digest(toy_run)  # the same run as one never interrupted
    assert [r["step"] for r in rundir.read_log(run)] == [5, 10]  # the stopped attempt's records are gone


def test_interrupt_after_a_checkpoint_names_it(tmp_path, capsys, monkeypatch):
    hook_trainers(monkeypatch, stop_at(7, KeyboardInterrupt()))
    code, out, err = cli_run(capsys, *TRAIN, "--out", tmp_path / "run")
    line = one_error_line(err)
    assert code == 130 and "step-00000005, is intact" in line and "--resume" in line, line


# ---- out of memory and divergence --------------------------------------------------------------------------------
@pytest.mark.parametrize("error", [
    torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 8.00 GiB (GPU 0; 7.79 GiB total capacity)"),
    RuntimeError("[enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: can't allocate memory: you tried "
                 "to allocate 8589934592 bytes. Error code 12 (Cannot allocate memory)"),
    MemoryError(),
])
def test_out_of_memory_is_one_line(error, tmp_path, capsys, monkeypatch):
    hook_trainers(monkeypatch, stop_at(1, error))
    code, out, err = cli_run(capsys, *TRAIN, "--out", tmp_path / "run")
    line = one_error_line(err)
    assert code == 1 and "out of memory" in line and "--batch-size" in line and "--width" in line, line


def test_debug_shows_the_traceback(tmp_path, capsys, monkeypatch):
    hook_trainers(monkeypatch, stop_at(1, MemoryError()))
    for how in ("flag", "environment"):
        if how == "environment":
            monkeypatch.setenv("DDPMKIT_DEBUG", "1")
        argv = [*TRAIN, "--out", tmp_path / how] + (["--debug"] if how == "flag" else [])
        code, out, err = cli_run(capsys, *argv)
        assert code == 1 and "Traceback" in err and err.strip().splitlines()[-1].startswith("ddpmkit train: error: out of memory")


def test_divergence_is_one_line_that_tells_the_truth(tmp_path, capsys, monkeypatch):
    """Every step's loss NaN: training stops after --max-nonfinite steps, exit 1, one line
    that says no checkpoint was written and not to --resume a config that diverges."""

    class NaNLoss(diffusion.DiffusionLoss):  # a fake objective: the diffusion loss made NaN
        def losses(self, batch):
            losses, t = super().losses(batch)
            return losses * float("nan"), t

    monkeypatch.setattr(diffusion, "DiffusionLoss", NaNLoss)
    code, out, err = cli_run(capsys, *TRAIN, "--out", tmp_path / "run")
    line = one_error_line(err)
    assert code == 1 and "non-finite" in line and "no checkpoint was written" in line and "--lr" in line, line
    assert checkpoint.newest_checkpoint(tmp_path / "run") is None


def test_nan_weights_at_a_save_are_one_line(tmp_path, capsys, monkeypatch):
    """Weights gone NaN without a non-finite loss: the checkpoint is refused (FloatingPointError),
    exit 1, one line that says no checkpoint exists yet; nothing half-written is left."""

    def poison(trainer, step):
        if step == 4:
            with torch.no_grad():
                next(trainer.net.parameters()).fill_(float("nan"))

    hook_trainers(monkeypatch, poison)
    code, out, err = cli_run(capsys, *TRAIN, "--out", tmp_path / "run")
    line = one_error_line(err)
    assert code == 1 and "non-finite" in line and "no complete checkpoint" in line, line
    assert list((tmp_path / "run").glob("checkpoints/*")) == []  # refused before anything was written
