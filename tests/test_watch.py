"""Watching a run (issue 15, items 1, 2 and 4): TensorBoard and W&B logs read back with their own
readers, also across a resume; --eval-every's records, best/ and --weights best; the progress
bar's quality figure; a missing extra's one line."""

import dataclasses
import glob
import json
import os
import struct
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from ddpmkit import api, build, checkpoint, cli, rundir
from ddpmkit.errors import UserError
from ddpmkit.pictures import PointPictures
from ddpmkit.sampling import SamplingRequest

from helpers import hook_trainers, stop_at


def toy_config(**train):
    """moons with a tiny MLP and T = 50: a few seconds for 40 steps, pictures and measurements."""
    c = api.default_config("moons")
    return dataclasses.replace(
        c, data=dataclasses.replace(c.data, num_points=2000), net=dataclasses.replace(c.net, hidden=32, blocks=1),
        diffusion=dataclasses.replace(c.diffusion, num_steps=50),
        train=dataclasses.replace(c.train, batch_size=64, log_every=10, **train))


@pytest.fixture
def offline_wandb(tmp_path, monkeypatch):
    """W&B never tries the network and writes nothing outside tmp_path."""
    for name in ("WANDB_DIR", "WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR"):
        monkeypatch.setenv(name, str(tmp_path / "wandb-home"))
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")


class Crash(Exception):
    pass


def tensorboard_events(run_dir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"scalars": 0, "images": 0, "tensors": 0})
    events.Reload()  # applies the purge a resumed SummaryWriter asks for
    return events


def wandb_history(run_dir) -> list[dict]:
    """Every history row of the run's offline W&B files, in the order they were written: the
    .wandb file is a LevelDB-style log (7-byte header ":W&B" + magic + version, 32 KiB blocks,
    records of checksum, length, type) of wandb's own protobuf Records."""
    from wandb.proto import wandb_internal_pb2

    rows = []
    for path in sorted(glob.glob(str(run_dir / "wandb" / "offline-run-*" / "run-*.wandb")), key=os.path.getmtime):
        data = Path(path).read_bytes()
        assert data[:4] == b":W&B"
        pos, record = 7, b""
        while pos + 7 <= len(data):
            left = 32768 - pos % 32768
            if left < 7:  # a block's tail too short for a header is padding
                pos += left
                continue
            _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
            pos += 7
            if kind == 0 and length == 0:
                pos += left - 7
                continue
            record += data[pos : pos + length]
            pos += length
            if kind in (1, 4):  # a full record, or the last piece of one
                parsed = wandb_internal_pb2.Record()
                parsed.ParseFromString(record)
                record = b""
                if parsed.WhichOneof("record_type") == "history":
                    rows.append({item.key or "/".join(item.nested_key): json.loads(item.value_json)
                                 for item in parsed.history.item})
    return rows


def test_tensorboard_and_wandb_hold_the_log_across_a_crash_and_resume(tmp_path, monkeypatch, offline_wandb):
    run_dir = tmp_path / "run"
    config = toy_config(steps=40, checkpoint_every=20, sample_every=10, eval_every=20, eval_samples=200,
                        loggers=("tensorboard", "wandb"))
    with monkeypatch.context() as m:
        hook_trainers(m, stop_at(30, Crash()))  # after step 30's log record and picture: the checkpoint is step 20's
        with pytest.raises(Crash):
            api.train(config, run_dir, progress=False)
    assert checkpoint.checkpoint_step(checkpoint.newest_checkpoint(run_dir)) == 20
    api.train(config, run_dir, resume=True, progress=False, pictures=False)

    log = rundir.read_log(run_dir)
    losses = {r["step"]: r["loss"] for r in log if "loss" in r}
    assert list(losses) == [10, 20, 30, 40]
    assert [r["step"] for r in log if "quality" in r] == [20, 40]
    assert all(r["examples_per_s"] > 0 for r in log if "loss" in r)

    events = tensorboard_events(run_dir)
    tb_loss = events.Scalars("train/loss")
    assert [e.step for e in tb_loss] == [10, 20, 30, 40]  # the crashed session's step 30 purged, written once again
    assert [e.value for e in tb_loss] == pytest.approx([losses[s] for s in (10, 20, 30, 40)], rel=1e-6)
    assert [e.step for e in events.Scalars("train/examples_per_s")] == [10, 20, 30, 40]
    quality_tag = "quality/mmd (200 samples, dpm++sde 20 steps)"
    assert [e.step for e in events.Scalars(quality_tag)] == [20, 40]
    assert [e.value for e in events.Scalars(quality_tag)] == pytest.approx([r["quality"]["mmd"] for r in log if "quality" in r])
    assert [e.step for e in events.Images("samples")] == [10, 20, 30]  # 30 drawn by the resumed session
    assert events.Images("samples")[0].width > 0
    config_text = events.Tensors("config/text_summary")
    assert len(config_text) == 1 and b'"eval_every": 20' in config_text[0].tensor_proto.string_val[0]

    history = wandb_history(run_dir)
    assert len(set(glob.glob(str(run_dir / "wandb" / "offline-run-*")))) == 2  # two sessions of one W&B run
    assert (run_dir / "wandb-id").read_text() in glob.glob(str(run_dir / "wandb" / "offline-run-*"))[0]
    wb_loss = [(row["_step"], row["train/loss"]) for row in history if "train/loss" in row]
    assert [s for s, _ in wb_loss] == [10, 20, 30, 40]  # nothing the crashed session logged is sent again
    assert [v for _, v in wb_loss] == pytest.approx([losses[s] for s in (10, 20, 30, 40)], rel=1e-6)
    assert [row["_step"] for row in history if quality_tag in row] == [20, 40]
    steps = [row["_step"] for row in history]
    assert steps == sorted(steps)  # never rewound


def test_eval_every_keeps_the_best_step_and_weights_best_samples_from_it(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(PointPictures, "training", lambda self, run, dataset, run_dir: None)  # seconds of GIF, not tested here
    run_dir = tmp_path / "run"
    code = cli.main(["train", "--data", "moons", "--num-points", "2000", "--width", "32", "--timesteps", "50",
                     "--steps", "60", "--batch-size", "64", "--log-every", "10", "--checkpoint-every", "15",
                     "--keep", "10", "--eval-every", "15", "--eval-samples", "300", "--out", str(run_dir)])
    assert code == 0
    out, err = capsys.readouterr()
    records = rundir.quality_records(run_dir)
    assert [r["step"] for r in records] == [15, 30, 45, 60]
    for r in records:
        assert r["samples"]["num"] == 300 and r["samples"]["sampler"] == "dpm++sde" and r["samples"]["steps"] == 20
        assert r["samples"]["weights"] == "EMA" and r["metric"] == "mmd"
        assert set(r["quality"]) == {"mmd", "sliced_wasserstein", "precision", "recall"}
    best = min(records, key=lambda r: r["quality"]["mmd"])
    assert f"best quality at step {best['step']}:" in out  # the one-line summary names it
    assert "MMD²" in err  # the progress bar shows the latest measurement beside the loss
    found = checkpoint.best_checkpoint(run_dir)
    assert checkpoint.checkpoint_step(found) == best["step"]
    assert json.loads((found / "meta.json").read_text())["quality"] == best["quality"]
    assert len(list((run_dir / "best").iterdir())) == 1
    same_step = checkpoint.step_dir(run_dir, best["step"])
    for name in ("ema.safetensors", "model.safetensors"):
        assert checkpoint.weights_sha256(checkpoint.load_weights(found / name)) == \
            checkpoint.weights_sha256(checkpoint.load_weights(same_step / name))
    assert (run_dir / "quality.png").is_file()

    from_best = api.sample(run_dir, 50, tmp_path / "best", SamplingRequest(weights="best", sampler="ddim", steps=10))
    from_file = api.sample(run_dir, 50, tmp_path / "file", SamplingRequest(weights=str(same_step / "ema.safetensors"), sampler="ddim", steps=10))
    np.testing.assert_array_equal(from_best, from_file)
    if best["step"] != 60:
        last = api.sample(run_dir, 50, tmp_path / "last", SamplingRequest(weights="last", sampler="ddim", steps=10))
        assert not np.array_equal(from_best, last)
    assert cli.main(["sample", "--run", str(run_dir), "--weights", "best", "-n", "8", "--steps", "5", "--sampler", "ddim"]) == 0
    assert cli.main(["evaluate", "--run", str(run_dir), "--weights", "best", "-n", "50", "--steps", "5"]) == 0
    assert json.loads((run_dir / "metrics.json").read_text())["sample_quality"][-1]["samples"]["weights"] == "best (EMA)"


def test_a_resumed_run_keeps_its_best_step_unless_a_later_one_beats_it(tmp_path):
    run_dir = tmp_path / "run"
    api.train(toy_config(steps=20, eval_every=10, eval_samples=200), run_dir, progress=False, pictures=False)
    before = checkpoint.best_meta(run_dir)
    trainer, _, _ = build.trainer(toy_config(steps=40, eval_every=10, eval_samples=200), run_dir)
    assert trainer.best["quality"] == before["quality"]  # read back from best/
    trainer.resume()
    result = trainer.fit()
    records = rundir.quality_records(run_dir)
    assert [r["step"] for r in records] == [10, 20, 30, 40]
    assert result.best["step"] == min(records, key=lambda r: r["quality"]["mmd"])["step"]
    assert checkpoint.checkpoint_step(checkpoint.best_checkpoint(run_dir)) == result.best["step"]


def test_weights_file_names_each_choice_and_refuses_what_is_not_there(tmp_path):
    run_dir = tmp_path / "run"
    api.train(toy_config(steps=5), run_dir, progress=False, pictures=False)
    assert build.weights_file(run_dir, "ema") == build.weights_file(run_dir, "last") == run_dir / "ema.safetensors"
    assert build.weights_file(run_dir, "model") == run_dir / "model.safetensors"
    newest = checkpoint.newest_checkpoint(run_dir)
    assert build.weights_file(run_dir, str(newest)) == newest / "ema.safetensors"
    with pytest.raises(UserError, match="--eval-every"):
        build.weights_file(run_dir, "best")
    with pytest.raises(UserError, match="neither best, last, ema, model"):
        build.weights_file(run_dir, str(tmp_path / "nothing.safetensors"))
    run = build.load_run(run_dir, "model")
    live = checkpoint.load_weights(run_dir / "model.safetensors")
    assert all(torch.equal(run.net.state_dict()[k], v) for k, v in live.items())


def test_no_ema_is_an_alias_of_weights_model_and_both_at_once_are_refused(tmp_path, capsys):
    run_dir = tmp_path / "run"
    api.train(toy_config(steps=5), run_dir, progress=False, pictures=False)
    args = ["sample", "--run", str(run_dir), "-n", "8", "--steps", "5", "--sampler", "ddim"]
    assert cli.main([*args, "--no-ema", "--out", str(tmp_path / "a")]) == 0
    assert cli.main([*args, "--weights", "model", "--out", str(tmp_path / "b")]) == 0
    np.testing.assert_array_equal(np.load(tmp_path / "a" / "samples.npy"), np.load(tmp_path / "b" / "samples.npy"))
    capsys.readouterr()
    assert cli.main([*args, "--no-ema", "--weights", "best"]) == 2
    assert "give only --weights" in capsys.readouterr().err


@pytest.mark.parametrize("logger, module", [("wandb", "wandb"), ("tensorboard", "torch.utils.tensorboard")])
def test_a_missing_extra_is_one_line_naming_it_before_anything_is_written(tmp_path, capsys, monkeypatch, logger, module):
    monkeypatch.setitem(sys.modules, module, None)  # import raises ImportError, as if not installed
    out = tmp_path / "run"
    code = cli.main(["train", "--data", "moons", "--steps", "2", "--logger", logger, "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and f'pip install "ddpmkit[{logger}]"' in err
    assert not out.exists()


def test_logger_none_and_unknown_names(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(PointPictures, "training", lambda self, run, dataset, run_dir: None)  # seconds of GIF, not tested here
    out = tmp_path / "run"
    assert cli.main(["train", "--data", "moons", "--steps", "2", "--logger", "mlflow", "--out", str(out)]) == 2
    assert "unknown logger (--logger) 'mlflow'; choose one of: tensorboard, wandb" in capsys.readouterr().err
    assert not out.exists()
    assert cli.main(["train", "--data", "moons", "--steps", "2", "--num-points", "500", "--width", "16",
                     "--timesteps", "20", "--batch-size", "16", "--logger", "none", "--no-progress", "--out", str(out)]) == 0
    assert json.loads((out / "config.json").read_text())["train"]["loggers"] == []
    assert not (out / "tensorboard").exists() and not (out / "wandb").exists()


def test_an_image_run_measures_frechet_distance_kid_and_precision_recall_in_its_own_features(tmp_path):
    c = api.default_config("digits")
    config = dataclasses.replace(c, diffusion=dataclasses.replace(c.diffusion, num_steps=50),
                                 net=dataclasses.replace(c.net, base_width=8, channel_mults=(1,)),
                                 train=dataclasses.replace(c.train, steps=4, batch_size=16, log_every=2, eval_every=2,
                                                           eval_samples=100, checkpoint_every=0))
    result = api.train(config, tmp_path / "run", progress=False, pictures=False)
    records = rundir.quality_records(tmp_path / "run")
    assert [r["step"] for r in records] == [2, 4]
    for r in records:
        assert set(r["quality"]) == {"frechet_distance", "kid", "kid_std", "precision", "recall"}
        assert r["metric"] == "frechet_distance" and r["samples"]["num"] == 100
        assert np.isfinite(r["quality"]["frechet_distance"]) and 0 <= r["quality"]["precision"] <= 1
        assert "own" in r["measured_on"] or "features" in r["measured_on"]
    assert result.best["step"] in (2, 4)
    assert (tmp_path / "run" / "features").is_dir()  # the own features, kept for every later measurement


def _weights(value: float) -> dict:
    return {"w": torch.full((3,), value)}


def test_a_crash_while_writing_best_keeps_the_previous_best_complete(tmp_path, monkeypatch):
    checkpoint.save_best(tmp_path, 10, _weights(1.0), _weights(1.5), {"quality": {"mmd": 0.5}, "metric": "mmd"})
    real = os.replace

    def crash_on_directories(src, dst):
        if os.path.isdir(src):
            raise OSError("killed while renaming")
        real(src, dst)

    monkeypatch.setattr(os, "replace", crash_on_directories)
    with pytest.raises(OSError, match="killed"):
        checkpoint.save_best(tmp_path, 20, _weights(2.0), _weights(2.5), {"quality": {"mmd": 0.1}, "metric": "mmd"})
    monkeypatch.undo()
    found = checkpoint.best_checkpoint(tmp_path)
    assert checkpoint.checkpoint_step(found) == 10 and checkpoint.best_meta(tmp_path)["quality"] == {"mmd": 0.5}
    assert torch.equal(checkpoint.load_weights(found / "ema.safetensors")["w"], torch.full((3,), 1.5))
    assert not list((tmp_path / "best").glob(".*"))  # the half-written step 20 is gone
    checkpoint.save_best(tmp_path, 20, _weights(2.0), _weights(2.5), {"quality": {"mmd": 0.1}, "metric": "mmd"})
    assert [p.name for p in (tmp_path / "best").iterdir()] == ["step-00000020"]  # the older best deleted after
    with pytest.raises(FloatingPointError):  # never a NaN best
        checkpoint.save_best(tmp_path, 30, _weights(float("nan")), _weights(1.0), {"quality": {"mmd": 0.0}, "metric": "mmd"})
    assert checkpoint.checkpoint_step(checkpoint.best_checkpoint(tmp_path)) == 20
