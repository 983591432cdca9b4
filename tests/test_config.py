"""config: the frozen dataclasses a run is made of, their validation and their JSON round trip."""

import dataclasses
import json

import pytest

from ddpmkit import api, build
from ddpmkit.config import DataConfig, DiffusionConfig, RunConfig, TrainConfig
from ddpmkit.errors import UserError
from ddpmkit.nets.mlp import GatedMLPConfig, MLPConfig
from ddpmkit.nets.unet import UNetConfig


def configs() -> dict[str, RunConfig]:
    unet = UNetConfig(base_width=16, channel_mults=(1, 2, 2), attention_resolutions=(8,), linear_attention_resolutions=(16,),
                      image_size=32, num_classes=4, block="convnext", dropout=0.1)
    return {
        "mlp": RunConfig(data=DataConfig(name="moons", mean=(0.5, 0.25), scale=0.8, num_classes=2),
                         net=MLPConfig(hidden=64, out_dim=4, num_classes=2), conditional=True, seed=3),
        "gated-mlp": RunConfig(data=DataConfig(name="8gaussians"), net=GatedMLPConfig(num_steps=50),
                               diffusion=DiffusionConfig(schedule="linear", num_steps=50, prediction="v", loss="huber")),
        "unet": RunConfig(data=DataConfig(name="faces.npz", image_size=(32, 48), channels=3, hflip=True, holdout=0.2),
                          net=unet, diffusion=DiffusionConfig(variance="learned_range", min_snr_gamma=5.0),
                          train=TrainConfig(steps=10, lr_decay="cosine", precision="bf16", grad_accum=2, batch_size=8)),
    }


@pytest.mark.parametrize("kind", ["mlp", "gated-mlp", "unet"])
def test_a_run_config_survives_json_tuples_and_all(kind):
    config = configs()[kind]
    text = config.to_json()
    assert json.loads(text)["net"]["kind"] == kind
    again = RunConfig.from_json(text)
    assert again == config and type(again.net) is type(config.net)
    for value in (again.data.image_size, again.data.mean, getattr(again.net, "channel_mults", ())):
        assert value is None or isinstance(value, tuple)  # JSON lists come back as tuples
    assert hash(again) == hash(config)


def test_resolved_presets_survive_json(tmp_path):
    for name in ("moons", "digits"):
        config = api.default_config(name)
        config = build.resolve_config(config, build.modality(config).load(0)[1])
        (tmp_path / f"{name}.json").write_text(config.to_json())
        assert RunConfig.load(tmp_path / f"{name}.json") == config


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda d: d["net"].update(kind="transformer"), "unknown network kind 'transformer'; expected one of: mlp, gated-mlp, unet"),
        (lambda d: d.update(extra={}), r"config has unknown sections \['extra'\]; was it written by a newer ddpmkit\?"),
        (lambda d: d["train"].update(momentum=0.9), r"config section 'train' has unknown options \['momentum'\]"),
        (lambda d: d["diffusion"].update(schedule="warp"), 'config field diffusion.schedule must be one of "linear", "cosine"'),
    ],
)
def test_a_config_that_is_not_ours_is_refused(edit, message):
    d = configs()["mlp"].to_dict()
    edit(d)
    with pytest.raises(UserError, match=message):
        RunConfig.from_dict(d)


def test_an_unreadable_config_file_is_one_clear_error(tmp_path):
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(UserError, match="config.json is not a valid ddpmkit config .*; rebuild it or train again"):
        RunConfig.load(tmp_path / "config.json")


def test_holdout_must_leave_training_images():
    for bad in (-0.1, 1.0, 2):
        with pytest.raises(UserError, match=r"--holdout is the share of images kept out of training, in \[0, 1\)"):
            DataConfig(name="digits", holdout=bad)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: TrainConfig(batch_size=10, grad_accum=4), "--batch-size 10 must be divisible by --grad-accum 4"),
        (lambda: TrainConfig(ema_decay=1.0), r"--ema-decay must lie in \[0, 1\), got 1.0"),
        (lambda: TrainConfig(p_uncond=1.5), r"--p-uncond must lie in \[0, 1\], got 1.5"),
        (lambda: TrainConfig(lr_decay="step"), r"unknown lr decay \(--lr-decay\) 'step'; choose one of: constant, cosine, linear"),
        (lambda: TrainConfig(steps=True), "--steps must be a positive integer, got True"),
        (lambda: DiffusionConfig(min_snr_gamma=-1), "--min-snr-gamma must not be negative, got -1"),
        (lambda: DataConfig(num_points=0), "--num-points must be a positive integer, got 0"),
    ],
)
def test_bad_values_name_the_option(make, message):
    with pytest.raises(UserError, match=message):
        make()


def test_configs_are_frozen():
    config = configs()["unet"]
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.seed = 1
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.train.steps = 1


def test_epochs_become_steps_rounded_up_over_the_global_batch():
    """⌈epochs · N / batch⌉: the global batch is what one step takes, whatever --grad-accum and
    the number of processes (batch_size counts them all)."""
    train = TrainConfig(epochs=3, batch_size=256)
    assert train.steps_for(1000) == 12  # 3000 examples: 11 full steps and one that ends the third epoch
    assert TrainConfig(epochs=2, batch_size=250).steps_for(1000) == 8  # exact
    assert TrainConfig(epochs=3, batch_size=256, grad_accum=4).steps_for(1000) == 12
    assert train.epoch_at(12, 1000) == pytest.approx(3.072) and train.epoch_at(4, 1000) == pytest.approx(1.024)
    with pytest.raises(UserError, match="--epochs must be a positive integer, got 0"):
        TrainConfig(epochs=0)
    config = RunConfig(train=TrainConfig(epochs=5), diffusion=DiffusionConfig(schedule="linear", beta_start=1e-4, beta_end=0.02),
                       data=DataConfig(name="moons", toy_noise=0.1))
    assert RunConfig.from_json(config.to_json()) == config
