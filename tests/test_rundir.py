"""rundir: atomic writes, config.json, log.jsonl and the top-level links of a run directory."""

import json
import os

import numpy as np
import pytest
from PIL import Image

from ddpmkit import rundir
from ddpmkit.config import RunConfig

from helpers import picture, toy_config


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "f.txt"
    rundir.atomic_write_text(path, "old")

    def half_then_crash(tmp):
        tmp.write_text("ne")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        rundir.atomic_write(path, half_then_crash)
    assert path.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["f.txt"]
    rundir.atomic_write_text(path, "new")
    assert path.read_text() == "new" and [p.name for p in tmp_path.iterdir()] == ["f.txt"]


def test_arrays_and_pictures_are_written_where_asked(tmp_path):
    array = np.arange(12, dtype=np.uint8).reshape(3, 4)
    rundir.save_npy(tmp_path / "samples.npy", array)
    rundir.save_npy(tmp_path / "labels", array[0])  # np.save would have appended .npy
    assert sorted(p.name for p in tmp_path.iterdir()) == ["labels", "samples.npy"]
    loaded = np.load(tmp_path / "samples.npy")
    assert loaded.dtype == np.uint8 and np.array_equal(loaded, array) and np.array_equal(np.load(tmp_path / "labels"), array[0])
    rundir.save_png(tmp_path / "p.png", Image.fromarray(array * 20))
    assert np.array_equal(np.asarray(picture(tmp_path / "p.png", mode="L", size=(4, 3))), array * 20)


def test_config_json_round_trips_and_creates_the_run_directory(tmp_path):
    config = toy_config()
    rundir.write_config(tmp_path / "new" / "run", config)
    assert RunConfig.load(tmp_path / "new" / "run" / rundir.CONFIG) == config


def test_the_log_is_appended_read_and_truncated_by_step(tmp_path):
    for step in (1, 2, 3, 4):
        rundir.append_log(tmp_path, {"step": step, "loss": 1 / step})
    with open(tmp_path / rundir.LOG, "a") as f:
        f.write("\n")  # a blank line is skipped
    assert [r["step"] for r in rundir.read_log(tmp_path)] == [1, 2, 3, 4]
    assert rundir.read_log(tmp_path / rundir.LOG) == rundir.read_log(tmp_path)  # the directory or the file
    rundir.truncate_log(tmp_path, 2)  # what a resume from step 2 keeps
    assert rundir.read_log(tmp_path) == [{"step": 1, "loss": 1.0}, {"step": 2, "loss": 0.5}]
    assert (tmp_path / rundir.LOG).read_text() == "".join(json.dumps(r) + "\n" for r in rundir.read_log(tmp_path))
    rundir.truncate_log(tmp_path / "elsewhere", 2)  # no log yet: nothing to do
    assert not (tmp_path / "elsewhere").exists()


def test_the_top_level_files_are_copies_of_a_checkpoint(tmp_path):
    step = tmp_path / rundir.CHECKPOINTS / "step-00000002"
    step.mkdir(parents=True)
    for name in rundir.TOP_LEVEL_FILES:
        (step / name).write_text(name)
    (tmp_path / "model.safetensors").write_text("an older checkpoint's")
    rundir.copy_top_level(tmp_path, step)
    for name in rundir.TOP_LEVEL_FILES:
        assert (tmp_path / name).read_text() == name
        assert not os.path.samefile(tmp_path / name, step / name)  # a copy: damage to one never reaches the other
    (tmp_path / "ema.safetensors").write_text("damaged in place")
    assert (step / "ema.safetensors").read_text() == "ema.safetensors"
