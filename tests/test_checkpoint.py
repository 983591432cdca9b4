"""Run-directory checkpoints: a crash at any point leaves the last good checkpoint loadable."""

import os
import shutil
import subprocess
import sys

import pytest
import torch

from ddpmkit import checkpoint, rundir
from ddpmkit.errors import UserError


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


def test_a_failed_write_keeps_the_good_file(tmp_path, monkeypatch):
    good = {"w": torch.ones(3)}
    checkpoint.save_weights(tmp_path / "m.safetensors", good)
    before = (tmp_path / "m.safetensors").read_bytes()

    def broken(path, data):  # rundir.atomic_write_bytes: half the bytes reach the temporary file, then the disk is full
        def write(tmp):
            tmp.write_bytes(data[:4])
            raise OSError(28, "No space left on device")

        rundir.atomic_write(path, write)

    monkeypatch.setattr(checkpoint, "atomic_write_bytes", broken)
    with pytest.raises(OSError):
        checkpoint.save_weights(tmp_path / "m.safetensors", {"w": torch.zeros(3)})
    assert (tmp_path / "m.safetensors").read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["m.safetensors"]
    monkeypatch.undo()
    with pytest.raises(FloatingPointError):  # NaN weights are never written
        checkpoint.save_weights(tmp_path / "m.safetensors", {"w": torch.tensor([float("nan")])})
    assert (tmp_path / "m.safetensors").read_bytes() == before


def test_the_weights_hash_is_of_the_tensors_whatever_holds_them(tmp_path):
    a = {"w": torch.arange(6.0).reshape(2, 3), "b": torch.zeros(2)}
    digest = checkpoint.weights_sha256(a)
    checkpoint.save_weights(tmp_path / "a.safetensors", a)
    assert checkpoint.weights_sha256(checkpoint.load_weights(tmp_path / "a.safetensors")) == digest
    assert checkpoint.weights_sha256({"b": a["b"], "w": a["w"].t().contiguous().t()}) == digest  # key order, strides
    for other in ({**a, "w": a["w"].reshape(3, 2)}, {**a, "w": a["w"].double()}, {"v": a["w"], "b": a["b"]},
                  {**a, "b": torch.tensor([0.0, -0.0])}):  # shape, dtype, name, a single bit
        assert checkpoint.weights_sha256(other) != digest


def test_weights_that_do_not_fit_the_network_are_refused_naming_them(tmp_path):
    net = torch.nn.Linear(3, 2)
    good = {k: v.clone() for k, v in net.state_dict().items()}
    checkpoint.load_matching(net, {k: v + 1 for k, v in good.items()}, tmp_path / "m.safetensors")
    assert torch.equal(net.bias, good["bias"] + 1)
    with pytest.raises(UserError, match=r"the weights in .*m.safetensors do not fit .*\(missing: \['bias'\]; unexpected: \['extra'\]\)"):
        checkpoint.load_matching(net, {"weight": good["weight"], "extra": good["bias"]}, tmp_path / "m.safetensors")
    with pytest.raises(UserError, match=r"shape differs: \['weight'\]"):
        checkpoint.load_matching(net, {"weight": torch.zeros(2, 4), "bias": good["bias"]}, tmp_path / "m.safetensors")
    with pytest.raises(UserError, match="no weights at .*missing.safetensors; train a model first"):
        checkpoint.load_weights(tmp_path / "missing.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"junk")
    with pytest.raises(UserError, match="is not a readable safetensors file"):
        checkpoint.load_weights(tmp_path / "junk.safetensors")


def test_the_same_best_step_saved_again_replaces_it_whole(tmp_path):
    # a resumed run measures the step of best/ again: the new copy must replace the old one
    # (the old code deleted it under the temporary folder's own name, losing both)
    first, second = {"w": torch.ones(3)}, {"w": torch.full((3,), 2.0)}
    checkpoint.save_best(tmp_path, 10, first, first, {"quality": {"fd": 1.0}, "metric": "fd"})
    path = checkpoint.save_best(tmp_path, 10, second, second, {"quality": {"fd": 0.5}, "metric": "fd"})
    assert checkpoint.best_checkpoint(tmp_path) == path
    assert torch.equal(checkpoint.load_weights(path / "ema.safetensors")["w"], second["w"])
    assert sorted(p.name for p in (tmp_path / "best").iterdir()) == ["step-00000010"]
