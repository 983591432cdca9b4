"""`ddpmkit train` (and api.train beneath it) end to end: what a run directory holds, options
reaching config.json and the network, resuming, and the one-line errors of bad input."""

import dataclasses
import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from ddpmkit import api, build, checkpoint
from ddpmkit.build import build_net, load_run
from ddpmkit.cli import main
from ddpmkit.config import RunConfig
from ddpmkit.evaluation import measures
from ddpmkit.nets.blocks import ConvNeXtBlock, LinearAttention, ResBlock, SelfAttention
from ddpmkit.rundir import read_log
from ddpmkit.sampling import SamplingRequest, draw, picture_steps

from helpers import TINY_IMAGES, TINY_TOY, assert_drawn, bluish_share, gif_frames, one_line_error, picture, tiny_digits, with_train


def assert_weights_of(run_dir, config: RunConfig, step: int) -> None:
    """model/ema.safetensors fit the network config.json describes, differ from each other,
    and are the files of checkpoint `step`, whose state.pt is at that step."""
    keys = set(build_net(config).state_dict())
    live, ema = (checkpoint.load_weights(run_dir / f"{name}.safetensors") for name in ("model", "ema"))
    assert set(live) == set(ema) == keys
    assert checkpoint.weights_sha256(live) != checkpoint.weights_sha256(ema)
    newest = checkpoint.newest_checkpoint(run_dir)
    assert newest.name == f"step-{step:08d}" and checkpoint.load_state(run_dir / "state.pt")["step"] == step
    assert checkpoint.weights_sha256(checkpoint.load_weights(newest / "ema.safetensors")) == checkpoint.weights_sha256(ema)


# ---- what a run directory holds -----------------------------------------------------------------
def test_a_2d_run_holds_its_config_weights_log_pictures_and_distances(toy_run):
    config = RunConfig.load(toy_run / "config.json")
    assert (config.diffusion.schedule, config.diffusion.loss, config.diffusion.num_steps) == ("linear", "huber", 50)
    assert json.loads((toy_run / "config.json").read_text())["net"]["kind"] == "mlp" and len(config.data.mean) == 2
    assert_weights_of(toy_run, config, 30)
    log = read_log(toy_run)
    assert [r["step"] for r in log] == [10, 20, 30]
    assert {"loss", "loss_q0", "loss_q1", "loss_q2", "loss_q3", "grad_norm", "lr", "nonfinite"} <= set(log[0])
    assert all(np.isfinite(r["loss"]) and r["nonfinite"] == 0 for r in log)
    for strip in ("forward.png", "reverse.png"):  # ten scatters in a row
        image = assert_drawn(toy_run / strip)
        assert image.width > 5 * image.height and bluish_share(image) > 0.001, strip
    assert bluish_share(assert_drawn(toy_run / "samples.png")) > 0.002  # 500 samples (the legend alone: < 0.0005)
    assert_drawn(toy_run / "loss.png")
    # the data, forward frames at 24 steps, reverse frames at the same steps, the samples
    assert gif_frames(toy_run / "diffusion.gif") == 2 + 2 * len(picture_steps(50, 24))
    metrics = json.loads((toy_run / "metrics.json").read_text())
    assert np.isfinite(metrics["mmd"]) and metrics["sliced_wasserstein"] > 0


def test_an_image_run_holds_its_config_weights_log_and_pictures(digits_run):
    config = RunConfig.load(digits_run / "config.json")
    assert config.data.image_size == (8, 8) and config.net.base_width == 8 and config.diffusion.num_steps == 20
    assert_weights_of(digits_run, config, 3)
    assert [r["step"] for r in read_log(digits_run)] == [3]  # log_every 100: a record at the end
    picture(digits_run / "samples.png", mode="L", size=(584, 584))  # 64 grey 8x8 samples, 8 by 8, enlarged 8x
    forward = assert_drawn(digits_run / "forward.png")
    assert forward.width > 2 * forward.height  # four images at ten values of t
    assert_drawn(digits_run / "loss.png")


@pytest.mark.slow
def test_short_moons_training_beats_an_untrained_model(tmp_path):
    config = with_train(api.default_config("moons"), steps=1500, batch_size=256, log_every=100)
    config = dataclasses.replace(config, data=dataclasses.replace(config.data, num_points=2000),
                                 diffusion=dataclasses.replace(config.diffusion, num_steps=100))
    api.train(config, tmp_path / "run", progress=False)
    run = load_run(tmp_path / "run")
    trained = api.toy_distances(run.config, api.draw(run, 2000, SamplingRequest(seed=1, sampler="ddpm")).data)
    baseline = api.toy_distances(run.config, api.draw(build.make_run(tmp_path, run.config, build_net(run.config)), 2000,
                                                      SamplingRequest(seed=1, sampler="ddpm")).data)
    assert trained["mmd"] < 0.1 * baseline["mmd"] and trained["mmd"] < 5e-3
    assert trained["sliced_wasserstein"] < 0.25 * baseline["sliced_wasserstein"]
    # what training stored: the distances of the 2,000 samples drawn for its pictures
    stored = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert stored["mmd"] < 0.1 * baseline["mmd"] and stored["sliced_wasserstein"] < 0.25 * baseline["sliced_wasserstein"]
    assert [r["step"] for r in read_log(tmp_path / "run")] == list(range(100, 1501, 100))
    assert bluish_share(assert_drawn(tmp_path / "run" / "samples.png")) > 0.01
    assert gif_frames(tmp_path / "run" / "diffusion.gif") == 2 + 2 * len(picture_steps(100, 24))
    for name in ("forward.png", "reverse.png", "loss.png"):
        assert_drawn(tmp_path / "run" / name)


@pytest.mark.slow
def test_short_digits_training_beats_an_untrained_model(tmp_path, eval_cache):
    """Quality: Fréchet distance in the run's own features (a classifier ddpmkit trains on the
    digits), the untrained U-Net as the baseline, and how evenly the predicted classes spread.
    (The class histogram says nothing of the baseline: the classifier spreads saturated noise
    over the classes too, confidently wrong.) The classifier comes from the cache of the digits
    run's evaluation: the same training images."""
    c = api.default_config("digits")
    config = dataclasses.replace(
        c,
        diffusion=dataclasses.replace(c.diffusion, num_steps=200),
        train=dataclasses.replace(c.train, steps=300, batch_size=64, checkpoint_every=0),
    )
    api.train(config, tmp_path, progress=False)
    run = load_run(tmp_path)
    _, quality, _ = measures(run.modality).quick_measure(run)
    # Drawn as `ddpmkit sample` draws (the run's default sampler: dpm++sde, 20 steps).
    trained = quality(draw(run, 400, SamplingRequest(seed=1)).data)
    untrained = quality(draw(build.make_run(tmp_path, run.config, build_net(run.config)), 400, SamplingRequest(seed=1)).data)
    assert trained["frechet_distance"] < 0.2 * untrained["frechet_distance"]
    assert trained["class_entropy"] > 1.8  # most of the ten digits appear


def test_keep_bounds_step_checkpoints_and_sample_grids_appear(tmp_path):
    config = tiny_digits(steps=8, checkpoint_every=2, sample_every=4, keep=2)
    api.train(config, tmp_path, progress=False)
    assert [p.name for p in checkpoint.complete_checkpoints(tmp_path)] == ["step-00000006", "step-00000008"]
    assert sorted(p.name for p in (tmp_path / "steps").iterdir()) == ["step-00000004.png"]  # not at the end
    picture(tmp_path / "steps" / "step-00000004.png", mode="L", size=(584, 584))  # 64 grey 8x8 samples
    assert not list(tmp_path.rglob(".*tmp*"))


def test_a_dozen_images_train_non_square(tmp_path, image_folder):
    folder = image_folder(tmp_path)
    out = tmp_path / "run"
    argv = ["train", "--data", str(folder), "--image-size", "16x24", "--out", str(out), "--steps", "2",
            "--timesteps", "10", "--batch-size", "16", "--width", "8", "--no-progress", "--sample-every", "0"]
    assert main(argv) == 0
    config = RunConfig.load(out / "config.json")
    assert config.data.image_size == (16, 24) and config.data.channels == 3 and config.data.hflip  # the folder preset flips
    picture(out / "samples.png", mode="RGB", size=((8 * 25 + 1) * 2, (8 * 17 + 1) * 2))  # 64 16x24 tiles, 8 by 8, 2x
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
    picture(out / "samples.png", mode="LA", size=(584, 584))
    picture(out / "steps" / "step-00000001.png", mode="LA", size=(584, 584))
    assert_drawn(out / "forward.png")
    assert main(["sample", "--run", str(out), "-n", "4", "--out", str(tmp_path / "s"), "--gif"]) == 0
    assert np.load(tmp_path / "s" / "samples.npy").shape == (4, 8, 8, 2)
    assert gif_frames(tmp_path / "s" / "reverse.gif") == 11  # T = 10 steps and the samples
    assert main(["show-forward", "--data", str(tmp_path / "la.npy"), "--out", str(tmp_path / "f.png"),
                 "--num-images", "1", "--timesteps", "20"]) == 0
    assert_drawn(tmp_path / "f.png")


def test_unet_options_from_the_command_line_shape_the_network(tmp_path):
    """--channel-mults, --blocks-per-level, --block, --attention-res, --linear-attention-res,
    --heads and --dropout reach config.json and the network built from it."""
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
    assert plain.net.attention_resolutions == () and plain.net.channel_mults == (1, 2, 2)  # the preset's 4 levels trimmed: 16 → 8 → 4 px

    def modules(config, kind):
        return [m for m in build_net(config).modules() if type(m) is kind]

    shaped = RunConfig.load(tmp_path / "a" / "config.json")
    assert modules(shaped, ResBlock) == [] and len(modules(shaped, ConvNeXtBlock)) == 1 + 1 + 1 + 2 + 2 * 3
    # full attention at 4 px (the last level: 1 encoder and 2 decoder blocks) and in the middle;
    # linear attention at 8 px (1 encoder and 2 decoder blocks), each with 2 heads
    assert len(modules(shaped, SelfAttention)) == 4 and len(modules(shaped, LinearAttention)) == 3
    assert {m.heads for m in modules(shaped, SelfAttention) + modules(shaped, LinearAttention)} == {2}
    assert modules(plain, SelfAttention) == [] and modules(plain, LinearAttention) == [] and modules(plain, ConvNeXtBlock) == []


def test_gated_mlp_from_the_cli_and_default_run_directory(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    argv = ["train", "--data", "8gaussians", "--net", "gated-mlp", "--steps", "5", "--timesteps", "20",
            "--num-points", "200", "--batch-size", "32", "--no-progress"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    runs = list((tmp_path / "runs").iterdir())
    assert len(runs) == 1 and runs[0].name.startswith("8gaussians-") and f"writing the run to runs/{runs[0].name}" in printed
    config = RunConfig.load(runs[0] / "config.json")
    assert json.loads((runs[0] / "config.json").read_text())["net"]["kind"] == "gated-mlp"
    assert config.net.num_steps == 20  # one gate per trained timestep


def test_conditional_toy_data_and_npz_labels(tmp_path):
    tiny = ["--steps", "3", "--timesteps", "10", "--batch-size", "8", "--no-progress"]
    assert main(["train", "--data", "moons", "--conditional", "--num-points", "100", "--out", str(tmp_path / "m"), *tiny]) == 0
    assert RunConfig.load(tmp_path / "m" / "config.json").num_classes == 2
    assert main(["sample", "--run", str(tmp_path / "m"), "-n", "4", "--class", "1", "--guidance", "1"]) == 0
    assert np.load(tmp_path / "m" / "samples" / "labels.npy").tolist() == [1] * 4
    images = np.random.default_rng(0).integers(0, 255, (12, 8, 8), dtype=np.uint8)
    np.savez(tmp_path / "a.npz", images=images, labels=np.arange(12) % 3)
    assert main(["train", "--data", str(tmp_path / "a.npz"), "--conditional", "--width", "8", "--out", str(tmp_path / "a"), *tiny]) == 0
    config = RunConfig.load(tmp_path / "a" / "config.json")
    assert config.num_classes == config.data.num_classes == 3


def test_speed_flags_are_recorded_and_may_change_on_resume(tmp_path, capsys):
    run = tmp_path / "run"
    argv = ["train", "--out", str(run), "--steps", "2", "--timesteps", "10", "--batch-size", "8", "--width", "8",
            "--grad-checkpoint", "--checkpoint-every", "1", "--device", "cpu", "--no-progress"]
    assert main(argv) == 0
    config = json.loads((run / "config.json").read_text())
    assert config["net"]["grad_checkpoint"] is True and config["train"]["precision"] == "fp32"  # the digits default
    wanted = "auto"  # bf16 where this CPU has it, else fp32: either way recorded as asked
    assert main(["train", "--resume", str(run), "--steps", "3", "--no-grad-checkpoint", "--precision", wanted,
                 "--device", "cpu", "--no-progress"]) == 0
    config = RunConfig.load(run / "config.json")
    assert config.net.grad_checkpoint is False and config.train.precision == wanted
    assert [r["step"] for r in read_log(run)] == [2, 3]  # logged at the end of each call
    capsys.readouterr()
    assert main(["train", "--data", "moons", "--out", str(tmp_path / "toy"), "--grad-checkpoint"]) == 2
    one_line_error(capsys.readouterr().err, "--grad-checkpoint applies to the U-Net")


# ---- resuming -------------------------------------------------------------------------------------
def test_resume_with_flips_dropout_and_workers_is_exact(tmp_path):
    config = tiny_digits(steps=12, checkpoint_every=6, lr_decay="constant")  # the LR then does not depend on the total
    config = dataclasses.replace(config, data=dataclasses.replace(config.data, hflip=True))
    api.train(config, tmp_path / "full", progress=False)

    api.train(with_train(config, steps=6), tmp_path / "resumed", progress=False)  # stops at 6 as if killed there
    (tmp_path / "resumed" / "log.jsonl").open("a").write(json.dumps({"step": 7, "loss": 9.9}) + "\n")  # after the checkpoint
    api.train(with_train(config, num_workers=1), tmp_path / "resumed", resume=True, progress=False)

    a, b = read_log(tmp_path / "full"), read_log(tmp_path / "resumed")
    assert [r["step"] for r in b] == list(range(1, 13))
    assert [r["loss"] for r in a] == [r["loss"] for r in b]
    full, resumed = load_run(tmp_path / "full"), load_run(tmp_path / "resumed")
    for (k, p), q in zip(full.net.state_dict().items(), resumed.net.state_dict().values()):
        assert torch.equal(p, q), k


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="the CUDA generator's state is saved only on a GPU"))])
def test_resume_with_strong_dropout_continues_the_device_generator(device, tmp_path):
    """Dropout on a GPU draws from the CUDA generator: state.pt keeps it (only there), and the
    resumed steps draw the masks the uninterrupted run drew."""
    config = tiny_digits(steps=4, checkpoint_every=2, lr_decay="constant")
    config = dataclasses.replace(config, net=dataclasses.replace(config.net, dropout=0.5))
    api.train(config, tmp_path / "full", device=device, progress=False, pictures=False)
    api.train(with_train(config, steps=2), tmp_path / "resumed", device=device, progress=False, pictures=False)
    assert ("cuda_rng_ranks" in checkpoint.load_state(tmp_path / "resumed" / "state.pt")) == (device == "cuda")
    api.train(config, tmp_path / "resumed", device=device, resume=True, progress=False, pictures=False)
    a, b = read_log(tmp_path / "full"), read_log(tmp_path / "resumed")
    assert [r["step"] for r in b] == [1, 2, 3, 4]
    # on a GPU only up to the non-deterministic order of some kernels' sums; new masks move the loss by percents
    assert [r["loss"] for r in b] == pytest.approx([r["loss"] for r in a], rel=0 if device == "cpu" else 1e-4)


def files_of(run):
    return {p.relative_to(run): p.read_bytes() for p in sorted(run.rglob("*")) if p.is_file()}


def test_resume_without_a_complete_checkpoint_restarts_in_place(toy_run, tmp_path, capsys):
    run = tmp_path / "stopped"  # training stopped before its first checkpoint was complete
    (run / "checkpoints" / "step-00000010").mkdir(parents=True)  # no meta.json: not complete
    shutil.copy(toy_run / "config.json", run / "config.json")
    assert main(["train", "--resume", str(run), "--steps", "60", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "has no complete checkpoint" in out and "starting it again from step 0" in out
    assert [r["step"] for r in read_log(run)][-1] == 60
    assert checkpoint.checkpoint_step(checkpoint.newest_checkpoint(run)) == 60


def test_resume_of_weights_that_do_not_fit_config_json_writes_nothing(toy_run, tmp_path, capsys):
    run = tmp_path / "edited"
    shutil.copytree(toy_run, run)
    config = json.loads((run / "config.json").read_text())
    config["net"]["hidden"] *= 2  # the checkpoint was trained with the old width
    (run / "config.json").write_text(json.dumps(config))
    before = files_of(run)
    assert main(["train", "--resume", str(run), "--steps", "60", "--no-progress"]) == 2
    one_line_error(capsys.readouterr().err, r"weights in \S*step-00000030\S*model.safetensors do not fit the model config.json "
                                            r"describes \(shape differs: .*\); was config.json edited\?")
    assert files_of(run) == before


def test_resume_refuses_a_changed_config(digits_run, capsys):
    before = files_of(digits_run)
    assert main(["train", "--resume", str(digits_run), "--channels", "3"]) == 2
    one_line_error(capsys.readouterr().err, r"--resume continues a run with its own config.json; drop --channels")
    assert main(["train", "--resume", str(digits_run), "--out", str(digits_run / "elsewhere")]) == 2
    one_line_error(capsys.readouterr().err, "--resume writes into the run it continues; drop --out")
    assert files_of(digits_run) == before


def test_an_existing_run_is_not_overwritten(toy_run, capsys):
    before = (toy_run / "model.safetensors").read_bytes()
    assert main(["train", "--data", "moons", "--out", str(toy_run), *TINY_TOY]) == 2
    one_line_error(capsys.readouterr().err, f"{toy_run} already holds a run; continue it with --resume {toy_run} \\(a run with no complete checkpoint "
                   "starts again from step 0\\) or pick another --out")
    assert (toy_run / "model.safetensors").read_bytes() == before


def test_a_directory_that_is_no_run_cannot_be_resumed(tmp_path, capsys):
    (tmp_path / "model.safetensors").write_bytes(b"")
    assert main(["train", "--resume", str(tmp_path)]) == 2
    one_line_error(capsys.readouterr().err, "not a ddpmkit run \\(no config.json\\); pass the directory ddpmkit train wrote")


# ---- bad input ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "argv, message",
    [
        (["--data", "spirals"], "unknown dataset 'spirals'.*moons, swiss-roll"),
        (["--data", "moons", "--schedule", "warp"], "unknown schedule 'warp'; choose one of: linear, cosine"),
        (["--data", "moons", "--loss", "l3"], "unknown loss 'l3'; choose one of: l2, l1, huber"),
        (["--data", "moons", "--prediction", "score"], "unknown prediction 'score'; choose one of: eps, x0, v"),
        (["--data", "moons", "--timesteps", "0"], r"the number of diffusion steps T \(--timesteps\) must be a positive integer, got 0"),
        (["--data", "moons", "--steps", "-5"], "--steps must be a positive integer, got -5"),
        (["--data", "moons", "--batch-size", "0"], "--batch-size must be a positive integer, got 0"),
        (["--data", "moons", "--lr", "0"], "--lr must be a positive number, got 0"),
        (["--data", "moons", "--warmup-steps", "-1"], "--warmup-steps must not be negative, got -1"),
        (["--data", "moons", "--holdout", "0.1"], "--holdout applies to image data; 2-D runs are scored on fresh points"),
        (["--holdout", "1"], r"--holdout is the share of images kept out of training, in \[0, 1\)"),
        (["--data", "moons", "--net", "unet"], "--net 'unet' is not available for moons; 2-D data takes: mlp, gated-mlp"),
        (["--data", "swiss-roll", "--conditional", *TINY_IMAGES[:6]], "--conditional needs class labels, and swiss-roll has none"),
        (["--steps", "1", "--width", "8", "--precision", "fp16", "--device", "cpu"], r"--precision fp16 .*needs CUDA"),
    ],
)
def test_bad_input_is_one_line_with_exit_code_2(argv, message, capsys, tmp_path):
    assert main(["train", *argv, "--out", str(tmp_path / "x"), "--no-progress"]) == 2
    one_line_error(capsys.readouterr().err, message)
    assert not (tmp_path / "x" / "model.safetensors").exists()


@pytest.mark.parametrize(
    "make_argv, message",
    [
        (lambda p, folder: ["--data", str(p / "missing")], "unknown dataset .*no such file or folder"),
        (lambda p, folder: ["--data", "moons", "--channel-mults", "1,2"], "--channel-mults shape the U-Net of image data"),
        (lambda p, folder: ["--channel-mults", "1,x"], "--channel-mults takes comma-separated integers"),
        (lambda p, folder: ["--channel-mults", "1,0"], "channel_mults must hold positive integers"),
        (lambda p, folder: ["--dropout", "1.5"], r"--dropout is the drop probability in each block, in \[0, 1\); got 1.5"),
        (lambda p, folder: ["--data", str(folder(p)), "--attention-res", "8"], "--attention-res need --image-size"),
        (lambda p, folder: ["--attention-res", "2"], "attention_resolutions has 2, which is no level's size; with image_size 8 the levels are 8, 4"),
        (lambda p, folder: ["--data", str((p / "empty").mkdir() or p / "empty"), "--image-size", "8"], "no images"),
        (lambda p, folder: ["--data", str(folder(p)), "--image-size", "12", "--channel-mults", "1,2,2,2"], "divisible|multiple"),
        (lambda p, folder: ["--data", str(folder(p)), "--image-size", "28", "--attention-res", "16"],
         "attention_resolutions has 16, which is no level's size; with image_size 28 the levels are 28, 14, 7 px"),
        (lambda p, folder: ["--groups", "3", "--width", "8"], r"--groups 3 does not divide the U-Net's width 8 at level 0 \(--width 8 × mult 1\)"),
    ],
)
def test_bad_image_input(make_argv, message, tmp_path, capsys, image_folder):
    assert main(["train", *make_argv(tmp_path, image_folder), "--out", str(tmp_path / "x"), "--no-progress"]) == 2
    one_line_error(capsys.readouterr().err, f"(?i){message}")
    assert not (tmp_path / "x").exists()


@pytest.fixture
def image_folder():
    """folder(root) -> a folder of a dozen random 20x28 RGB PNGs under root."""

    def make(root, n=12, size=(20, 28)):
        folder = root / "imgs"
        folder.mkdir()
        rng = np.random.default_rng(0)
        for i in range(n):
            Image.fromarray(rng.integers(0, 255, (*size, 3), dtype=np.uint8)).save(folder / f"{i}.png")
        return folder

    return make


# ---- the options of the tutorials' recipes ----------------------------------------------------------
def test_epochs_beta_ends_and_toy_noise_reach_config_json_and_what_they_change(toy_run, tmp_path, capsys):
    """--epochs 3 of 500 points in batches of 64 is ⌈1500/64⌉ = 24 steps (the last one ends the
    third epoch and runs 36 examples into the fourth); the log counts epochs, and a resumed run
    ends at the same step and epoch. --beta-start/--beta-end are the β table's ends; --toy-noise
    is the generator's noise (wider moons, a larger recorded scale)."""
    out = tmp_path / "moons"
    argv = ["train", "--data", "moons", "--out", str(out), "--epochs", "3", "--batch-size", "64", "--num-points", "500",
            "--timesteps", "50", "--schedule", "linear", "--beta-start", "1e-3", "--beta-end", "0.1", "--toy-noise", "0.3",
            "--log-every", "5", "--checkpoint-every", "10", "--keep", "5", "--no-progress"]
    assert main(argv) == 0
    assert "trained 24 steps of 3 epochs" in capsys.readouterr().out
    config = json.loads((out / "config.json").read_text())
    assert (config["train"]["epochs"], config["train"]["steps"]) == (3, 24)
    assert (config["diffusion"]["beta_start"], config["diffusion"]["beta_end"], config["data"]["toy_noise"]) == (1e-3, 0.1, 0.3)
    log = [r for r in read_log(out) if "loss" in r]
    assert [r["epoch"] for r in log] == [pytest.approx(r["step"] * 64 / 500) for r in log] and log[-1]["epoch"] == 3.072
    betas = load_run(out).base.schedule.betas
    assert (betas[0].item(), betas[-1].item()) == (pytest.approx(1e-3), pytest.approx(0.1))
    assert config["data"]["scale"] > json.loads((toy_run / "config.json").read_text())["data"]["scale"]  # the same points, noisier

    # resumed (through the API, without the end-of-run pictures the first run drew)
    shutil.rmtree(out / "checkpoints" / "step-00000024")  # as if stopped after step 20
    saved = RunConfig.load(out / "config.json")
    result = api.train(saved, out, resume=True, progress=False, pictures=False)
    assert (result.first_step, result.steps) == (20, 24)
    again = [r for r in read_log(out) if "loss" in r]
    assert [(r["step"], r["epoch"]) for r in again] == [(r["step"], r["epoch"]) for r in log]
    more = dataclasses.replace(saved, train=dataclasses.replace(saved.train, epochs=4))  # what --resume --epochs 4 asks
    assert api.train(more, out, resume=True, progress=False, pictures=False).steps == 32  # ⌈2000/64⌉
    assert RunConfig.load(out / "config.json").train.steps == 32


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--steps", "5", "--epochs", "2"], "argument --epochs: not allowed with argument --steps"),
        (["--schedule", "cosine", "--beta-end", "0.02"], "--beta-start/--beta-end set the ends of the linear, quadratic, sigmoid"),
        (["--schedule", "linear", "--beta-start", "0.03", "--beta-end", "0.02"], "must satisfy 0 < start ≤ end < 1"),
        (["--toy-noise", "-0.1"], "--toy-noise must not be negative, got -0.1"),
        (["--groups", "4"], "--groups shape the U-Net of image data; 2-D data uses --net and --width"),
    ],
)
def test_bad_recipe_options_are_one_line(argv, message, tmp_path, capsys):
    try:
        code = main(["train", "--data", "moons", *argv, "--out", str(tmp_path / "x"), "--no-progress"])
    except SystemExit as e:  # argparse's own refusal (--steps with --epochs)
        code = e.code
    assert code == 2
    one_line_error(capsys.readouterr().err, message)
    assert not (tmp_path / "x").exists()


def test_groups_reach_config_json_and_every_groupnorm_of_the_unet(tmp_path):
    out = tmp_path / "g"
    assert main(["train", "--out", str(out), *TINY_IMAGES, "--timesteps", "4", "--groups", "4"]) == 0  # widths 8 and 16
    assert json.loads((out / "config.json").read_text())["net"]["groups"] == 4
    norms = [m for m in load_run(out).net.modules() if isinstance(m, torch.nn.GroupNorm)]
    assert len(norms) > 10 and {m.num_groups for m in norms} == {4}  # without --groups: 8 and 16 (32 clamped to each width)


def test_a_28px_labelled_idx_file_trains_with_no_shape_flags(tmp_path, capsys):
    """Fashion-MNIST's 28 px: the preset's four levels need multiples of 8, so the plan is
    28 → 14 → 7 with the preset's attention at 16 px moved to 14, each said in one line; the
    IDX file's labels make --conditional work."""
    from test_data_idx import mnist_files

    path, _, _ = mnist_files(tmp_path / "fashion", n=8)
    out = tmp_path / "run"
    assert main(["train", "--data", str(path), "--conditional", "--out", str(out), "--steps", "1", "--batch-size", "4",
                 "--width", "8", "--timesteps", "4", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "U-Net levels for 28x28 images: 28 → 14 → 7 px (channel mults 1,2,2; the preset's 1,2,2,2 needs sides divisible by 8)" in printed
    assert "attention at 16 px moved to 14 px: the U-Net's levels are 28, 14, 7 px" in printed
    net = json.loads((out / "config.json").read_text())["net"]
    assert (net["channel_mults"], net["attention_resolutions"], net["image_size"]) == ([1, 2, 2], [14], 28)
    assert net["num_classes"] == 10  # Fashion-MNIST's ten (the file lies in a folder named fashion)
    attentions = [m for m in load_run(out).net.modules() if isinstance(m, SelfAttention)]
    assert attentions  # at the 14 px level (and in the middle)


def test_the_annotated_diffusion_network_takes_its_shape_options_at_28px(tmp_path, capsys):
    """Fashion-MNIST's tutorial network (width 28, multipliers 1,2,4, linear attention at every
    level): the preset's full attention at 16 px has no free level left, and says so."""
    from ddpmkit.cli import parser
    from ddpmkit.cli.train import config_from_args

    np.save(tmp_path / "f.npy", np.zeros((4, 28, 28, 1), np.uint8))
    argv = ["train", "--data", str(tmp_path / "f.npy"), "--image-size", "28", "--block", "convnext", "--width", "28",
            "--channel-mults", "1,2,4", "--linear-attention-res", "28,14,7"]
    net = config_from_args(parser().parse_args(argv)).net
    assert (net.channel_mults, net.attention_resolutions, net.linear_attention_resolutions) == ((1, 2, 4), (), (28, 14, 7))
    assert "attention at 16 px dropped: every level of the U-Net has attention already" in capsys.readouterr().out


def test_the_digits_ema_is_the_power_profile_unless_ema_decay_asks_for_the_classic_one():
    from ddpmkit.cli import parser
    from ddpmkit.cli.train import config_from_args

    def train_config(*flags):
        return config_from_args(parser().parse_args(["train", *flags])).train

    assert train_config().ema_sigma_rel == 0.2
    classic = train_config("--ema-decay", "0.995")
    assert (classic.ema_sigma_rel, classic.ema_decay) == (0.0, 0.995)
    assert train_config("--ema-sigma-rel", "0.1").ema_sigma_rel == 0.1
    assert train_config("--data", "moons").ema_sigma_rel == 0.0
