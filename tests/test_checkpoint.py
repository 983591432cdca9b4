"""Run-directory checkpoints: a crash at any point leaves the last good checkpoint loadable."""

import os
import shutil
import subprocess
import sys

import pytest
import torch

from ddpmkit import checkpoint


def save(run, step, keep=3):
    """A checkpoint whose every tensor holds `step`, so what loads back names its step."""
    w = {"w": torch.full((3,), float(step))}
    return checkpoint.save_checkpoint(run, step, w, {"w": w["w"] + 0.5}, {"step": step}, keep)


def assert_loads_step(run, step):
    """The newest complete checkpoint and the top-level files are all those of `step`."""
    found = checkpoint.newest_checkpoint(run)
    assert found is not None and checkpoint.checkpoint_step(found) == step
    for where in (found, run):
        assert torch.equal(checkpoint.load_weights(where / "model.safetensors")["w"], torch.full((3,), float(step)))
        assert torch.equal(checkpoint.load_weights(where / "ema.safetensors")["w"], torch.full((3,), step + 0.5))
        assert checkpoint.load_state(where / "state.pt")["step"] == step


def test_a_complete_checkpoint_is_never_overwritten(tmp_path):
    save(tmp_path, 4)
    with pytest.raises(FileExistsError, match="never overwritten"):
        checkpoint.save_checkpoint(tmp_path, 4, {"w": torch.zeros(3)}, {"w": torch.zeros(3)}, {"step": 4}, 3)
    assert_loads_step(tmp_path, 4)
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == ["step-00000004"]


def test_a_crash_while_installing_a_checkpoint_keeps_the_previous_one(tmp_path, monkeypatch):
    save(tmp_path, 4)
    real = os.replace

    def crash_on_directories(src, dst):
        if os.path.isdir(src):
            raise OSError("killed while renaming")
        real(src, dst)

    monkeypatch.setattr(os, "replace", crash_on_directories)
    with pytest.raises(OSError, match="killed"):
        save(tmp_path, 6)
    monkeypatch.undo()
    assert_loads_step(tmp_path, 4)
    assert not list((tmp_path / "checkpoints").glob(".*"))  # the half-built step 6 is gone


def test_a_crash_while_deleting_an_old_checkpoint_keeps_the_newest_and_hides_the_old(tmp_path, monkeypatch):
    save(tmp_path, 2)
    real = shutil.rmtree

    def crash_on_checkpoints(path, *args, **kwargs):
        if os.path.isfile(os.path.join(path, "meta.json")):
            os.remove(os.path.join(path, "model.safetensors"))  # rmtree's order is the directory's: meta.json may outlive it
            raise OSError("killed while deleting")
        real(path, *args, **kwargs)

    monkeypatch.setattr(shutil, "rmtree", crash_on_checkpoints)
    with pytest.raises(OSError, match="killed"):
        save(tmp_path, 4, keep=1)  # step 4 is complete, then step 2 is deleted
    monkeypatch.undo()
    assert_loads_step(tmp_path, 4)
    assert [p.name for p in checkpoint.complete_checkpoints(tmp_path)] == ["step-00000004"]
    assert [p.name for p in (tmp_path / "checkpoints").glob(".*")] == [f".step-00000002.tmp-{os.getpid()}"]


def test_temporaries_of_crashed_processes_go_at_the_next_save(tmp_path):
    save(tmp_path, 2)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    root = tmp_path / "checkpoints"
    leftovers = {
        "crashed": root / f".step-00000004.tmp-{dead.pid}",  # a process killed while saving step 4
        "running": root / f".step-00000004.tmp-{os.getppid()}",  # a live process: not ours to touch
        "other": root / ".notes.tmp-1",  # not a checkpoint temporary
    }
    for path in leftovers.values():
        path.mkdir()
        (path / "meta.json").write_text("{}")
    save(tmp_path, 4)
    assert not leftovers["crashed"].exists()
    assert leftovers["running"].is_dir() and leftovers["other"].is_dir()
    assert_loads_step(tmp_path, 4)
