import dataclasses
import json

import numpy as np
import pytest
import torch
from PIL import Image

from ddpmkit import api, checkpoint
from ddpmkit.build import Run, build_denoiser, build_net, load_data, load_run
from ddpmkit.cli import main
from ddpmkit.config import RunConfig
from ddpmkit.errors import UserError
from ddpmkit.nets.unet import UNetConfig
from ddpmkit.train import Trainer, read_log


def tiny_digits(steps=12, **train) -> RunConfig:
    c = api.default_config("digits")
    return dataclasses.replace(
        c,
        net=UNetConfig(base_width=8, channel_mults=(1, 2), blocks_per_level=1, dropout=0.1, groups=4),
        diffusion=dataclasses.replace(c.diffusion, num_steps=50),
        train=dataclasses.replace(c.train, steps=steps, batch_size=16, warmup_steps=3, log_every=1, **train),
    )


@pytest.mark.slow
def test_short_digits_training_beats_an_untrained_model(tmp_path):
    """Quality: Fréchet distance in the run's own features (a classifier ddpmkit trains on the
    digits), the untrained U-Net as the baseline, and how evenly the predicted classes spread.
    (The class histogram says nothing of the baseline: the classifier spreads saturated noise
    over the classes too, confidently wrong.)"""
    c = api.default_config("digits")
    config = dataclasses.replace(
        c,
        diffusion=dataclasses.replace(c.diffusion, num_steps=200),
        train=dataclasses.replace(c.train, steps=300, batch_size=64, checkpoint_every=0),
    )
    api.train(config, tmp_path, progress=False)
    run = load_run(tmp_path)
    _, quality, _ = api.quality_measure(run)
    trained = quality(api.draw(run, 400, seed=1).data)
    net = build_net(run.config).eval()
    untrained = quality(api.draw(Run(tmp_path, run.config, net, build_denoiser(run.config, net)), 400, seed=1).data)
    assert trained["frechet_distance"] < 0.2 * untrained["frechet_distance"]
    assert trained["class_entropy"] > 1.8  # most of the ten digits appear


def image_trainer(config: RunConfig, run_dir) -> Trainer:
    dataset, data = load_data(config.data, config.seed)
    config = api._fit_net_to_data(dataclasses.replace(config, data=data))
    run_dir.mkdir(exist_ok=True)
    cpu = torch.device("cpu")
    return Trainer(config, build_net(config), dataset, run_dir, device=cpu, prepare=api._preparer(config, cpu), progress=False)


def assert_same_tensors(a: dict, b: dict) -> None:
    assert set(a) == set(b)
    for k in a:
        assert a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]), k


def test_checkpoint_round_trip_is_bit_exact(tmp_path):
    """A checkpoint gives back the trainer's live weights, EMA weights and optimiser state,
    each bit for bit and each in its own place."""
    trainer = image_trainer(tiny_digits(steps=4), tmp_path)
    trainer.fit()  # ends with a checkpoint of step 4
    live, ema = trainer.net.state_dict(), trainer.ema.model.state_dict()
    differ = [k for k, v in trainer.net.named_parameters() if not torch.equal(v, ema[k])]
    assert len(differ) == len(list(trainer.net.parameters()))  # so a swap of the two would show
    found = checkpoint.newest_checkpoint(tmp_path)
    assert found.name == "step-00000004"
    assert_same_tensors(checkpoint.load_weights(found / "model.safetensors"), live)
    assert_same_tensors(checkpoint.load_weights(found / "ema.safetensors"), ema)
    state = checkpoint.load_state(found / "state.pt")  # weights_only: no arbitrary unpickling
    optimizer = trainer.optimizer.state_dict()
    assert state["step"] == 4 and state["ema"]["num_updates"] == 4
    assert state["optimizer"]["param_groups"] == optimizer["param_groups"]
    assert set(state["optimizer"]["state"]) == set(optimizer["state"]) and len(optimizer["state"]) == len(differ)
    for i, moments in optimizer["state"].items():  # step, exp_avg, exp_avg_sq of each parameter
        assert_same_tensors(state["optimizer"]["state"][i], moments)

    resumed = image_trainer(tiny_digits(steps=4), tmp_path)  # what --resume rebuilds from it
    assert resumed.resume() == 4
    assert_same_tensors(resumed.net.state_dict(), live)
    assert_same_tensors(resumed.ema.model.state_dict(), ema)
    for i, moments in optimizer["state"].items():
        assert_same_tensors(resumed.optimizer.state_dict()["state"][i], moments)
    assert torch.equal(resumed.generator.get_state(), trainer.generator.get_state())


def test_hflip_flips_the_drawn_rows_left_to_right():
    x = torch.arange(2 * 3 * 4 * 5, dtype=torch.float32).reshape(2, 3, 4, 5)  # [B, C, H, W]
    flip = api.HFlip()
    assert torch.equal(flip(x, torch.ones(2, dtype=torch.bool)), x.flip(-1))
    assert torch.equal(flip(x, torch.zeros(2, dtype=torch.bool)), x)
    mixed = flip(x, torch.tensor([True, False]))
    assert torch.equal(mixed[0], x[0].flip(-1)) and torch.equal(mixed[1], x[1])
    assert torch.equal(x.flip(-1)[0, 0, 0], torch.arange(4, -1, -1.0))  # -1 is the width axis
    coins = flip.draw(20_000, torch.Generator().manual_seed(0))
    assert coins.dtype == torch.bool and coins.shape == (20_000,) and abs(coins.float().mean() - 0.5) < 0.015


def test_resume_with_flips_dropout_and_workers_is_exact(tmp_path):
    config = tiny_digits(steps=12, checkpoint_every=6, lr_decay="constant")  # the LR then does not depend on the total
    config = dataclasses.replace(config, data=dataclasses.replace(config.data, hflip=True))
    api.train(config, tmp_path / "full", progress=False)

    crashing = dataclasses.replace(config, train=dataclasses.replace(config.train, steps=6))
    api.train(crashing, tmp_path / "resumed", progress=False)  # stops at 6 as if killed there
    (tmp_path / "resumed" / "log.jsonl").open("a").write(json.dumps({"step": 7, "loss": 9.9}) + "\n")  # after the checkpoint
    with_workers = dataclasses.replace(config, train=dataclasses.replace(config.train, num_workers=1))
    api.train(with_workers, tmp_path / "resumed", resume=True, progress=False)

    a, b = read_log(tmp_path / "full" / "log.jsonl"), read_log(tmp_path / "resumed" / "log.jsonl")
    assert [r["step"] for r in b] == list(range(1, 13))
    assert [r["loss"] for r in a] == [r["loss"] for r in b]
    full, resumed = load_run(tmp_path / "full"), load_run(tmp_path / "resumed")
    for (k, p), q in zip(full.net.state_dict().items(), resumed.net.state_dict().values()):
        assert torch.equal(p, q), k


def test_keep_bounds_step_checkpoints_and_sample_grids_appear(tmp_path):
    config = tiny_digits(steps=8, checkpoint_every=2, sample_every=4, keep=2)
    api.train(config, tmp_path, progress=False)
    assert [p.name for p in checkpoint.complete_checkpoints(tmp_path)] == ["step-00000006", "step-00000008"]
    assert (tmp_path / "samples" / "step-00000004.png").is_file()
    assert not list(tmp_path.rglob(".*tmp*"))


def test_a_failed_write_keeps_the_good_file(tmp_path, monkeypatch):
    good = {"w": torch.ones(3)}
    checkpoint.save_weights(tmp_path / "m.safetensors", good)
    before = (tmp_path / "m.safetensors").read_bytes()

    def broken(tensors, path, metadata=None):
        open(path, "wb").write(b"half")
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint, "save_file", broken)
    with pytest.raises(OSError):
        checkpoint.save_weights(tmp_path / "m.safetensors", {"w": torch.zeros(3)})
    assert (tmp_path / "m.safetensors").read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["m.safetensors"]
    with pytest.raises(FloatingPointError):  # NaN weights are never written
        checkpoint.save_weights(tmp_path / "m.safetensors", {"w": torch.tensor([float("nan")])})
    assert (tmp_path / "m.safetensors").read_bytes() == before


@pytest.fixture(scope="module")
def image_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("img") / "run"
    argv = ["train", "--out", str(out), "--steps", "3", "--timesteps", "20", "--batch-size", "8", "--width", "8", "--no-progress"]
    assert main(argv) == 0
    return out


def test_cli_image_run_and_sample(image_run, tmp_path):
    for name in ("config.json", "model.safetensors", "ema.safetensors", "state.pt", "log.jsonl", "samples.png", "forward.png", "loss.png"):
        assert (image_run / name).is_file(), name
    assert main(["sample", "--run", str(image_run), "-n", "10", "--out", str(tmp_path), "--gif"]) == 0
    arr = np.load(tmp_path / "samples.npy")
    assert arr.shape == (10, 8, 8, 1) and arr.dtype == np.uint8
    assert Image.open(tmp_path / "reverse.gif").n_frames > 10
    assert main(["show-forward", "--out", str(tmp_path / "f.png"), "--num-images", "2", "--timesteps", "100"]) == 0
    assert Image.open(tmp_path / "f.png").size[0] > 300


def _folder(tmp_path, n=12, size=(20, 28)):
    folder = tmp_path / "imgs"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (*size, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    return folder


def test_a_dozen_images_train_non_square(tmp_path):
    folder = _folder(tmp_path)
    out = tmp_path / "run"
    argv = ["train", "--data", str(folder), "--image-size", "16x24", "--out", str(out), "--steps", "2",
            "--timesteps", "10", "--batch-size", "16", "--width", "8", "--no-progress", "--sample-every", "0"]
    assert main(argv) == 0
    config = RunConfig.load(out / "config.json")
    assert config.data.image_size == (16, 24) and config.data.channels == 3 and config.data.hflip
    assert main(["sample", "--run", str(out), "-n", "2", "--out", str(tmp_path / "s")]) == 0
    assert np.load(tmp_path / "s" / "samples.npy").shape == (2, 16, 24, 3)


def test_grey_and_alpha_images_train_sample_and_draw(tmp_path):
    """Two channels (grey + alpha) from an .npy: training, step pictures, samples, the
    reverse GIF and show-forward all take them."""
    rng = np.random.default_rng(0)
    np.save(tmp_path / "la.npy", rng.integers(0, 256, (12, 8, 8, 2), dtype=np.uint8))
    out = tmp_path / "run"
    argv = ["train", "--data", str(tmp_path / "la.npy"), "--out", str(out), "--steps", "2", "--timesteps", "10",
            "--batch-size", "8", "--width", "8", "--sample-every", "1", "--no-progress"]
    assert main(argv) == 0
    assert RunConfig.load(out / "config.json").data.channels == 2
    assert Image.open(out / "samples.png").mode == "LA" and Image.open(out / "samples" / "step-00000001.png").mode == "LA"
    assert (out / "forward.png").is_file()
    assert main(["sample", "--run", str(out), "-n", "4", "--out", str(tmp_path / "s"), "--gif"]) == 0
    assert np.load(tmp_path / "s" / "samples.npy").shape == (4, 8, 8, 2)
    assert Image.open(tmp_path / "s" / "reverse.gif").n_frames == 11  # T = 10 steps and the samples
    assert main(["show-forward", "--data", str(tmp_path / "la.npy"), "--out", str(tmp_path / "f.png"),
                 "--num-images", "1", "--timesteps", "20"]) == 0


def test_unet_options_from_the_command_line_shape_the_network(tmp_path):
    """--channel-mults, --blocks-per-level, --block, --attention-res, --linear-attention-res,
    --heads and --dropout reach config.json and the network built from it."""
    from ddpmkit.build import build_net
    from ddpmkit.nets.unet import count_parameters

    np.save(tmp_path / "x.npy", np.random.default_rng(0).integers(0, 256, (12, 16, 16, 3), dtype=np.uint8))
    base = ["train", "--data", str(tmp_path / "x.npy"), "--steps", "1", "--timesteps", "10", "--batch-size", "4",
            "--width", "8", "--no-progress", "--sample-every", "0", "--image-size", "16"]
    argv = [*base, "--out", str(tmp_path / "a"), "--channel-mults", "1,2,4", "--blocks-per-level", "1",
            "--block", "convnext", "--attention-res", "4", "--linear-attention-res", "8", "--heads", "2", "--dropout", "0.2"]
    assert main(argv) == 0
    net = RunConfig.load(tmp_path / "a" / "config.json").net
    assert (net.channel_mults, net.blocks_per_level, net.block) == ((1, 2, 4), 1, "convnext")
    assert (net.attention_resolutions, net.linear_attention_resolutions, net.attention_heads, net.dropout) == ((4,), (8,), 2, 0.2)
    assert main([*base, "--out", str(tmp_path / "b"), "--attention-res", "none"]) == 0
    plain = RunConfig.load(tmp_path / "b" / "config.json")
    assert plain.net.attention_resolutions == () and plain.net.channel_mults == (1, 2, 2, 2)
    assert count_parameters(build_net(RunConfig.load(tmp_path / "a" / "config.json"))) != count_parameters(build_net(plain))


@pytest.mark.parametrize(
    "make_argv, message",
    [
        (lambda p: ["train", "--data", str(p / "missing")], "unknown dataset .*no such file or folder"),
        (lambda p: ["train", "--data", "moons", "--channel-mults", "1,2"], "--channel-mults shape the U-Net of image data"),
        (lambda p: ["train", "--channel-mults", "1,x"], "--channel-mults takes comma-separated integers"),
        (lambda p: ["train", "--channel-mults", "1,0"], "channel_mults must hold positive integers"),
        (lambda p: ["train", "--dropout", "1.5"], r"dropout must be in \[0, 1\)"),
        (lambda p: ["train", "--data", str(_folder(p)), "--attention-res", "8"], "--attention-res need --image-size"),
        (lambda p: ["train", "--attention-res", "2"], "attention_resolutions has 2, which is no level's size; with image_size 8 the levels are 8, 4"),
        (lambda p: ["train", "--data", str((p / "empty").mkdir() or p / "empty"), "--image-size", "8"], "no images"),
        (lambda p: ["train", "--data", str(_folder(p)), "--image-size", "12"], "divisible|multiple"),
        (lambda p: ["train", "--resume", str(p)], "not a ddpmkit run"),
    ],
)
def test_bad_image_input(make_argv, message, tmp_path, capsys):
    import re

    assert main([*make_argv(tmp_path), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and re.search(message, err, re.I), err


def test_resume_refuses_a_changed_config_and_a_mismatched_checkpoint(image_run, tmp_path, capsys):
    assert main(["train", "--resume", str(image_run), "--channels", "3"]) == 2
    assert "drop --channels" in capsys.readouterr().err
    edited = tmp_path / "edited"
    edited.mkdir()
    for name in ("model.safetensors", "ema.safetensors"):
        (edited / name).write_bytes((image_run / name).read_bytes())
    config = json.loads((image_run / "config.json").read_text())
    config["net"]["base_width"] = 16
    (edited / "config.json").write_text(json.dumps(config))
    assert main(["sample", "--run", str(edited), "-n", "2"]) == 2
    assert "do not fit the model" in capsys.readouterr().err


def test_device_choice():
    from ddpmkit.build import pick_device

    assert pick_device("cpu") == torch.device("cpu")
    assert pick_device(None).type in ("cpu", "cuda", "mps")
    if not torch.cuda.is_available():
        with pytest.raises(UserError, match="CUDA is not available"):
            pick_device("cuda")
    with pytest.raises(UserError, match="unknown device"):
        pick_device("tpu9")


def test_ode_likelihood_of_images_is_in_dequantised_bits_per_dim(image_run):
    """8-bit images are dequantised within their bins; the Hutchinson path gives a finite,
    positive bits/dim with a per-image spread."""
    from ddpmkit.api import evaluate_nll

    run = load_run(image_run)
    result = evaluate_nll(run, num=12, kind="ode", num_points=8, batch_size=6)
    assert result["nll_ode_examples"] == 12 and result["nll_ode_unit"].startswith("bits/dim (uniformly dequantised")
    assert 0 < result["nll_ode_bpd"] < 100 and result["nll_ode_stderr"] > 0


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="the CUDA generator's state is saved only on a GPU"))])
def test_resume_with_strong_dropout_continues_the_device_generator(device, tmp_path):
    """Dropout on a GPU draws from the CUDA generator: state.pt keeps it (only there), and the
    resumed steps draw the masks the uninterrupted run drew."""
    config = tiny_digits(steps=4, checkpoint_every=2, lr_decay="constant")
    config = dataclasses.replace(config, net=dataclasses.replace(config.net, dropout=0.5))
    api.train(config, tmp_path / "full", device=device, progress=False, pictures=False)
    crashing = dataclasses.replace(config, train=dataclasses.replace(config.train, steps=2))
    api.train(crashing, tmp_path / "resumed", device=device, progress=False, pictures=False)
    assert ("cuda_rng_ranks" in checkpoint.load_state(tmp_path / "resumed" / "state.pt")) == (device == "cuda")
    api.train(config, tmp_path / "resumed", device=device, resume=True, progress=False, pictures=False)
    a, b = read_log(tmp_path / "full" / "log.jsonl"), read_log(tmp_path / "resumed" / "log.jsonl")
    assert [r["step"] for r in b] == [1, 2, 3, 4]
    # on a GPU only up to the non-deterministic order of some kernels' sums; new masks move the loss by percents
    assert [r["loss"] for r in b] == pytest.approx([r["loss"] for r in a], rel=0 if device == "cpu" else 1e-4)
