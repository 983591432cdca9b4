"""Data-parallel training: two CPU processes (gloo) launched by torchrun, as users launch them.

The run uses gradient accumulation and random flips, so the shared draws of t, ε and
augmentation, the per-rank data shards and DDP's no_sync are all exercised.
"""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import ddpmkit
from ddpmkit import checkpoint
from ddpmkit.cli import main
from ddpmkit.config import RunConfig
from ddpmkit.distributed import World, pick_device
from ddpmkit.errors import UserError
from ddpmkit.rundir import read_log

from helpers import assert_drawn, picture

ARGS = [
    "--timesteps", "20", "--batch-size", "16", "--grad-accum", "2", "--hflip", "--width", "8",
    "--lr", "2e-3", "--warmup-steps", "0", "--lr-decay", "constant",  # the LR does not depend on --steps
    "--log-every", "1", "--checkpoint-every", "2", "--device", "cpu", "--no-progress",
]


def torchrun(nproc: int, argv: list[str], log_dir: Path) -> subprocess.CompletedProcess:
    """`torchrun --nproc-per-node nproc -m ddpmkit ...` with this checkout's ddpmkit, each
    process's output in log_dir/<run>/attempt_0/<rank>/."""
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    src = str(Path(ddpmkit.__file__).resolve().parents[1])
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join(p for p in (src, env.get("PYTHONPATH")) if p))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(nproc), "--standalone",
           "--log-dir", str(log_dir), "--redirects", "3", "-m", "ddpmkit", *argv]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)


def rank_output(log_dir: Path, rank: int, stream: str = "stdout") -> str:
    (path,) = log_dir.glob(f"*/attempt_0/{rank}/{stream}.log")
    return path.read_text()


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A two-process run of 4 steps and a one-process run of 8 steps, same global batch."""
    root = tmp_path_factory.mktemp("ddp")
    done = torchrun(2, ["train", "--out", str(root / "two"), "--steps", "4", *ARGS], root / "logs")
    assert done.returncode == 0, done.stderr[-3000:] + "".join(
        rank_output(root / "logs", r, s)[-1500:] for r in (0, 1) for s in ("stdout", "stderr"))
    assert main(["train", "--out", str(root / "one"), "--steps", "8", *ARGS]) == 0
    return root


def test_two_processes_compute_what_one_process_computes(runs):
    two, one = read_log(runs / "two"), read_log(runs / "one")[:4]
    # Same weights, data, t and ε: per-step losses and gradient norms agree up to the
    # order of float32 sums (the logged loss is the global mean, gathered from both ranks).
    for a, b in zip(two, one):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5)
        assert a["grad_norm"] == pytest.approx(b["grad_norm"], rel=1e-4)
    # Weights: reduction order changes gradients by ~1e-7 relative; Adam divides by √v, which
    # amplifies that only in coordinates whose gradient is itself at rounding level (measured
    # ≤ 1e-4 here). A real mismatch in data, t or ε moves most weights by ~lr = 2e-3 per step.
    for name in ("model", "ema"):
        a = checkpoint.load_weights(runs / "two" / f"{name}.safetensors")
        b = checkpoint.load_weights(runs / "one" / "checkpoints" / "step-00000004" / f"{name}.safetensors")
        assert set(a) == set(b) and not any(k.startswith(("module.", "_orig_mod.")) for k in a)
        diff = torch.cat([(a[k] - b[k]).abs().flatten() for k in a])
        assert float(diff.max()) < 1e-3 and float(diff.mean()) < 1e-6, name


def test_both_ranks_hold_identical_weights_and_ema(runs):
    """Before each checkpoint every rank hashes its weights and EMA weights; rank 0
    records all digests (and would have stopped had they differed)."""
    for step in (2, 4):
        state = checkpoint.load_state(runs / "two" / "checkpoints" / f"step-{step:08d}" / "state.pt")
        assert state["processes"] == 2
        for name in ("model", "ema"):
            first, second = state["replica_digests"][name]
            assert first == second and re.fullmatch(r"[0-9a-f]{64}", first)


def test_rank_zero_alone_writes_and_prints(runs):
    log = read_log(runs / "two")
    assert [r["step"] for r in log] == [1, 2, 3, 4]  # one writer: no record twice
    assert [p.name for p in checkpoint.complete_checkpoints(runs / "two")] == ["step-00000002", "step-00000004"]
    assert not list((runs / "two").rglob(".*tmp*"))
    config = RunConfig.load(runs / "two" / "config.json")
    assert config.train.grad_accum == 2 and config.data.hflip
    assert checkpoint.weights_sha256(checkpoint.load_weights(runs / "two" / "model.safetensors")) == \
        checkpoint.weights_sha256(checkpoint.load_weights(runs / "two" / "checkpoints" / "step-00000004" / "model.safetensors"))
    picture(runs / "two" / "samples.png", mode="L", size=(584, 584))  # 64 grey 8x8 samples
    assert_drawn(runs / "two" / "loss.png")
    assert "data parallel over 2 processes (gloo)" in rank_output(runs / "logs", 0)
    assert "trained 4 steps" in rank_output(runs / "logs", 0)
    assert rank_output(runs / "logs", 1) == ""


def test_resume_in_one_process_continues_exactly(runs, tmp_path):
    """The 2-process checkpoint resumes in one process and sees the data, t and ε the
    one-process run saw at steps 5-8."""
    run = shutil.copytree(runs / "two", tmp_path / "run")
    assert main(["train", "--resume", str(run), "--steps", "8", "--device", "cpu", "--no-progress"]) == 0
    resumed, one = read_log(run), read_log(runs / "one")
    assert [r["step"] for r in resumed] == list(range(1, 9))
    for a, b in zip(resumed[4:], one[4:]):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-4)
    assert checkpoint.load_state(run / "state.pt")["processes"] == 1


def test_two_processes_train_the_narrow_guide_as_one_process_does(tmp_path):
    """--guide-width under torchrun (with --grad-accum 2 and flips): the guide, data-parallel on its
    own, trains on both ranks' rows as one process trains it, up to the order of float sums; and the
    2-process checkpoint of step 2 resumes in one process to the same guide at step 4."""
    argv = ["train", "--steps", "4", *ARGS, "--guide-width", "4", "--guide-at", "0"]
    done = torchrun(2, [*argv, "--out", str(tmp_path / "two")], tmp_path / "logs")
    assert done.returncode == 0, done.stderr[-3000:] + "".join(
        rank_output(tmp_path / "logs", r, s)[-1500:] for r in (0, 1) for s in ("stdout", "stderr"))
    assert main([*argv, "--out", str(tmp_path / "one")]) == 0
    resumed = shutil.copytree(tmp_path / "two", tmp_path / "resumed")
    shutil.rmtree(resumed / "checkpoints" / "step-00000004")
    assert main(["train", "--resume", str(resumed), "--device", "cpu", "--no-progress"]) == 0
    last = lambda run, name: checkpoint.load_weights(tmp_path / run / "checkpoints" / "step-00000004" / name)  # noqa: E731
    for run in ("two", "resumed"):
        for name in ("guide-model.safetensors", "guide-ema.safetensors", "model.safetensors"):
            a, b = last(run, name), last("one", name)
            assert set(a) == set(b) and not any(k.startswith("module.") for k in a)
            diff = torch.cat([(a[k] - b[k]).abs().flatten() for k in a])
            assert float(diff.max()) < 1e-3 and float(diff.mean()) < 1e-6, (run, name)
    assert checkpoint.load_weights(tmp_path / "two" / "guide.safetensors")["stem.weight"].shape[0] == 4


def test_device_choice():
    assert pick_device("cpu") == torch.device("cpu")
    assert pick_device(None).type in ("cpu", "cuda", "mps")
    if not torch.cuda.is_available():
        with pytest.raises(UserError, match="--device cuda was asked for but CUDA is not available here; use --device cpu"):
            pick_device("cuda")
    with pytest.raises(UserError, match="unknown device 'tpu9'; use cpu, cuda, cuda:N or mps"):
        pick_device("tpu9")


@pytest.mark.parametrize(
    "env, argv, message",
    [
        ({"WORLD_SIZE": "2", "RANK": "0", "LOCAL_RANK": "0"}, ["--out", "{tmp}/r"], "MASTER_ADDR, MASTER_PORT are not.*torchrun"),
        ({"WORLD_SIZE": "2", "RANK": "0", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "1"}, [],
         "under torchrun pass --out"),
        ({"WORLD_SIZE": "2", "RANK": "0", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "1"},
         ["--out", "{tmp}/r", "--device", "cuda:1"], "LOCAL_RANK|CUDA is not available"),
        ({"WORLD_SIZE": "2", "RANK": "0", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "1"},
         ["--out", "{tmp}/r", "--device", "mps"], "CUDA .*or the CPU"),
        ({}, ["--out", "{tmp}/r", "--batch-size", "10", "--grad-accum", "4"], "divisible by --grad-accum"),
    ],
)
def test_launch_mistakes_are_one_line_errors(env, argv, message, monkeypatch, tmp_path, capsys):
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    assert main(["train", "--steps", "1", "--width", "8", "--no-progress", *argv]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and re.search(message, err), err
    assert not (tmp_path / "r").exists()


def test_only_rank_zero_warns_of_unreadable_images(tmp_path):
    import warnings

    import numpy as np
    from PIL import Image

    from ddpmkit.data.images import load_image_data
    from ddpmkit.distributed import quiet_unless_main

    for i in range(3):
        Image.fromarray(np.full((8, 8), 40 * i, dtype=np.uint8)).save(tmp_path / f"{i}.png")
    (tmp_path / "broken.png").write_bytes(b"not a png")
    for world, shown in ((World(), 1), (World(rank=0, size=2), 1), (World(rank=1, size=2), 0)):
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            with quiet_unless_main(world):
                assert len(load_image_data(tmp_path)) == 3
            warnings.warn("after the block")  # the filter is restored
        assert sum("unreadable" in str(w.message) for w in seen) == shown, world
        assert any(str(w.message) == "after the block" for w in seen)


# ---- progressive distillation on the same loop ------------------------------------------------------------------
DISTILL = ["--to-steps", "2", "--start-steps", "8", "--rounds-steps", "4", "--checkpoint-every", "2", "--batch-size", "32",
           "--grad-accum", "2", "--lr", "1e-3", "--device", "cpu", "--no-progress"]


def test_two_processes_distil_what_one_process_distils(toy_run, tmp_path):
    """`torchrun --nproc-per-node 2 -m ddpmkit distill --run-dir RUN ...` (the spelling torchrun leaves
    alone): two rounds of 4 steps on two gloo processes give one process's losses and weights, up to
    the order of float sums, with every checkpoint's replicas identical and rank 0 alone writing."""
    done = torchrun(2, ["distill", "--run-dir", str(toy_run), "--out", str(tmp_path / "two"), *DISTILL], tmp_path / "logs")
    assert done.returncode == 0, done.stderr[-3000:] + "".join(
        rank_output(tmp_path / "logs", r, s)[-1500:] for r in (0, 1) for s in ("stdout", "stderr"))
    assert main(["distill", "--run", str(toy_run), "--out", str(tmp_path / "one"), *DISTILL]) == 0
    two, one = read_log(tmp_path / "two"), read_log(tmp_path / "one")
    assert [r["step"] for r in two] == [r["step"] for r in one] == [4, 8]  # one writer: no record twice
    assert [r["round"] for r in two] == [1, 2]
    for a, b in zip(two, one):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-4) and a["grad_norm"] == pytest.approx(b["grad_norm"], rel=1e-3)
    for name in ("model", "ema"):
        a = checkpoint.load_weights(tmp_path / "two" / f"{name}.safetensors")
        b = checkpoint.load_weights(tmp_path / "one" / f"{name}.safetensors")
        assert set(a) == set(b) and not any(k.startswith("module.") for k in a)
        diff = torch.cat([(a[k] - b[k]).abs().flatten() for k in a])
        assert float(diff.max()) < 1e-3 and float(diff.mean()) < 1e-5, name
    assert [p.name for p in checkpoint.complete_checkpoints(tmp_path / "two")] == ["step-00000006", "step-00000008"]  # keep 2
    for step in (6, 8):
        state = checkpoint.load_state(tmp_path / "two" / "checkpoints" / f"step-{step:08d}" / "state.pt")
        assert state["processes"] == 2
        first, second = state["replica_digests"]["ema"]
        assert first == second
    record = __import__("json").loads((tmp_path / "two" / "distill.json").read_text())
    assert record["complete"] and [r["student_steps"] for r in record["finished"]] == [4, 2]
    assert "data parallel over 2 processes (gloo)" in rank_output(tmp_path / "logs", 0)
    assert "wrote the 2-step student" in rank_output(tmp_path / "logs", 0) and rank_output(tmp_path / "logs", 1) == ""
