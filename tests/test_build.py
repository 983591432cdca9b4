"""build: the config resolved against its data, the network, schedule and denoiser of a config,
the Trainer assembled with everything it takes, runs rebuilt from their directory, and the
training model (autocast, compile) the loss calls."""

import dataclasses

import numpy as np
import pytest
import torch

from ddpmkit import api, build, checkpoint
from ddpmkit.config import DataConfig, RunConfig
from ddpmkit.denoiser import Denoiser
from ddpmkit.errors import UserError
from ddpmkit.modality import Images, Points
from ddpmkit.nets.mlp import MLP, GatedMLP, GatedMLPConfig
from ddpmkit.nets.unet import UNet, UNetConfig
from ddpmkit.rundir import read_log
from ddpmkit.training import Trainer, diffusion

from helpers import digits_config, tiny_digits, toy_config, with_train


def resolved(config: RunConfig) -> RunConfig:
    return build.resolve_config(config, build.modality(config).load(config.seed)[1])


# ---- resolve_config ----------------------------------------------------------------------------
def test_resolve_config_sizes_the_network_for_the_data():
    points = resolved(toy_config())
    assert points.data.mean is not None and (points.net.dim, points.net.out_dim, points.net.num_classes) == (2, 2, 0)
    images = resolved(tiny_digits())
    assert images.data.image_size == (8, 8) and images.data.channels == 1 and images.data.num_classes == 10
    assert (images.net.in_channels, images.net.out_channels, images.net.image_size, images.net.num_classes) == (1, 1, 8, 0)


def test_resolve_config_doubles_the_outputs_of_a_learned_variance():
    for config, outputs in ((toy_config(), lambda c: c.net.out_dim), (tiny_digits(), lambda c: c.net.out_channels)):
        learned = dataclasses.replace(config, diffusion=dataclasses.replace(config.diffusion, variance="learned_range"))
        assert outputs(resolved(learned)) == 2 * outputs(resolved(config))


def test_resolve_config_conditions_on_the_datas_classes_only_when_asked():
    conditional = resolved(dataclasses.replace(tiny_digits(), conditional=True))
    assert conditional.num_classes == conditional.net.num_classes == 10
    assert resolved(dataclasses.replace(toy_config(), conditional=True)).num_classes == 2  # moons' two halves
    unlabelled = dataclasses.replace(toy_config(), data=DataConfig(name="swiss-roll", num_points=100), conditional=True)
    with pytest.raises(UserError, match="--conditional needs class labels, and swiss-roll has none; use labelled data .* or drop --conditional"):
        resolved(unlabelled)


def test_resolve_config_moves_attention_sizes_the_data_lacks_and_says_so(tmp_path):
    """A network asking for attention at 16 px and linear attention at 32 px keeps each where
    the data has a level of that size, whichever kind of attention; a size the levels lack
    moves to the nearest free level, or is dropped when none is free, each in one line."""
    net = UNetConfig(base_width=8, channel_mults=(1, 2), attention_resolutions=(16,), linear_attention_resolutions=(32,), groups=4)
    config = dataclasses.replace(api.default_config("digits"), net=net)
    said = []
    digits = build.resolve_config(config, build.modality(config).load(0)[1], said.append).net  # levels 8, 4
    assert digits.attention_resolutions == (8,) and digits.linear_attention_resolutions == (4,)
    assert said == ["attention at 16 px moved to 8 px: the U-Net's levels are 8, 4 px",
                    "linear attention at 32 px moved to 4 px: the U-Net's levels are 8, 4 px"]
    for side, full, linear in ((16, (16,), (8,)), (32, (16,), (32,))):  # levels 16, 8 and 32, 16
        np.save(tmp_path / f"{side}.npy", np.zeros((4, side, side, 3), np.uint8))
        net = resolved(dataclasses.replace(config, data=DataConfig(name=str(tmp_path / f"{side}.npy")))).net
        assert (net.attention_resolutions, net.linear_attention_resolutions) == (full, linear), side
        assert net.in_channels == 3 and net.image_size == side


def test_resolve_config_checks_the_image_size_against_the_levels(tmp_path):
    np.save(tmp_path / "x.npy", np.zeros((4, 8, 10), np.uint8))  # H = 8, W = 10: three levels need multiples of 4
    config = dataclasses.replace(api.default_config(str(tmp_path / "x.npy")), net=UNetConfig(channel_mults=(1, 2, 2)))
    with pytest.raises(UserError, match="8x10.*multiples of 4"):
        resolved(config)


# ---- networks, schedules, denoisers --------------------------------------------------------------
def test_build_net_draws_the_configs_network_from_its_seed_alone():
    config = resolved(toy_config())
    torch.manual_seed(1)
    a = build.build_net(config)
    after = torch.rand(1)
    torch.manual_seed(1)
    b = build.build_net(config)
    assert torch.equal(torch.rand(1), after)  # the global RNG is left as it was
    assert isinstance(a, MLP) and checkpoint.weights_sha256(a.state_dict()) == checkpoint.weights_sha256(b.state_dict())
    other = build.build_net(dataclasses.replace(config, seed=1))
    assert checkpoint.weights_sha256(other.state_dict()) != checkpoint.weights_sha256(a.state_dict())
    gated = dataclasses.replace(config, net=GatedMLPConfig(dim=2, num_steps=100))
    assert isinstance(build.build_net(gated), GatedMLP) and isinstance(build.build_net(resolved(tiny_digits())), UNet)


def test_build_denoiser_predicts_and_varies_as_configured():
    config = resolved(toy_config())
    config = dataclasses.replace(config, diffusion=dataclasses.replace(config.diffusion, prediction="v", variance="fixed_large"))
    net = build.build_net(config)
    den = build.build_denoiser(config, net)
    assert isinstance(den, Denoiser) and den.net is net and (den.prediction, den.variance) == ("v", "fixed_large")
    assert den.schedule.num_steps == 100 and torch.equal(den.schedule.betas, build.build_schedule(config).betas.float())  # cast once to float32


def test_hflip_flips_the_drawn_rows_left_to_right():
    x = torch.arange(2 * 3 * 4 * 5, dtype=torch.float32).reshape(2, 3, 4, 5)  # [B, C, H, W]
    flip = build.HFlip()
    assert torch.equal(flip(x, torch.ones(2, dtype=torch.bool)), x.flip(-1))
    assert torch.equal(flip(x, torch.zeros(2, dtype=torch.bool)), x)
    mixed = flip(x, torch.tensor([True, False]))
    assert torch.equal(mixed[0], x[0].flip(-1)) and torch.equal(mixed[1], x[1])
    assert torch.equal(x.flip(-1)[0, 0, 0], torch.arange(4, -1, -1.0))  # -1 is the width axis
    coins = flip.draw(20_000, torch.Generator().manual_seed(0))
    assert coins.dtype == torch.bool and coins.shape == (20_000,) and abs(coins.float().mean() - 0.5) < 0.015


# ---- the trainer -------------------------------------------------------------------------------
def test_trainer_assembles_what_the_config_asks_for(tmp_path):
    config = dataclasses.replace(tiny_digits(), conditional=True)
    config = dataclasses.replace(config, data=dataclasses.replace(config.data, hflip=True),
                                 diffusion=dataclasses.replace(config.diffusion, variance="learned_range", prediction="v"))
    trainer, config_out, dataset = diffusion.trainer(config, tmp_path)
    assert isinstance(trainer, Trainer) and trainer.config == config_out and trainer.dataset is dataset and len(dataset) == 1617
    assert isinstance(trainer.modality, Images) and trainer.modality.data == config_out.data
    assert isinstance(trainer.augment, build.HFlip)
    assert isinstance(trainer.net, UNet) and trainer.net.config == config_out.net
    assert config_out.net.num_classes == trainer.objective.num_classes == 10 and trainer.net.label_embed.num_embeddings == 11
    x = torch.zeros(3, 1, 8, 8)
    assert trainer.net(x, torch.zeros(3, dtype=torch.long)).shape == (3, 2, 8, 8)  # mean and variance
    denoiser = trainer.objective.denoiser
    assert isinstance(denoiser, Denoiser) and denoiser.net is trainer.model is trainer.net  # fp32, eager
    assert (denoiser.prediction, denoiser.variance) == ("v", "learned_range")
    plain, _, _ = diffusion.trainer(toy_config(), tmp_path / "toy")
    assert plain.augment is None and isinstance(plain.modality, Points) and plain.objective.num_classes == 0
    assert plain.modality.data.mean is not None  # the resolved data: points leave model space normalised back


def test_the_trainer_trains_with_the_denoiser_it_is_given(tmp_path):
    """The Trainer builds no Denoiser of its own: the loss calls the one it was handed."""

    class Counting(Denoiser):
        calls = 0

        def raw(self, x_t, t, label=None):
            Counting.calls += 1
            return super().raw(x_t, t, label)

    config = resolved(with_train(toy_config(steps=3), grad_accum=2, batch_size=32))
    kind = build.modality(config)
    dataset, _ = kind.load(config.seed)
    net = build.build_net(config)
    den = Counting(net, build.build_schedule(config), config.diffusion.prediction, config.diffusion.variance)
    tmp_path.mkdir(exist_ok=True)
    trainer = Trainer(config, net, diffusion.DiffusionLoss(config, den, kind.discrete), dataset, tmp_path, modality=kind,
                      device=torch.device("cpu"), progress=False)
    assert trainer.objective.denoiser is den
    assert [v for v in vars(trainer).values() if isinstance(v, Denoiser)] == []  # the objective's alone
    trainer.fit()
    assert Counting.calls == 3 * 2  # one call per micro-batch


def test_a_trainer_from_build_trains_as_api_train_does(tmp_path):
    config = with_train(tiny_digits(steps=4), checkpoint_every=2)
    api.train(config, tmp_path / "api", progress=False, pictures=False)
    trainer, resolved_config, _ = diffusion.trainer(config, tmp_path / "built", progress=False)
    (tmp_path / "built").mkdir()
    result = trainer.fit()
    a, b = read_log(tmp_path / "api"), read_log(tmp_path / "built")
    assert result.steps == 4 and [r["step"] for r in b] == [1, 2, 3, 4]
    assert [r["loss"] for r in a] == [r["loss"] for r in b] and [r["grad_norm"] for r in a] == [r["grad_norm"] for r in b]
    assert RunConfig.load(tmp_path / "api" / "config.json") == resolved_config
    for name in ("model", "ema"):
        assert checkpoint.weights_sha256(checkpoint.load_weights(tmp_path / "api" / f"{name}.safetensors")) == \
            checkpoint.weights_sha256(checkpoint.load_weights(tmp_path / "built" / f"{name}.safetensors"))


def test_trainer_reports_the_model_the_data_and_the_device(tmp_path):
    """The report names the network, its parameters (here counted by hand for the MLP), the
    examples and the device."""
    lines = []
    diffusion.trainer(toy_config(steps=1), tmp_path, report=lines.append)
    h, d, blocks, time_dim = 128, 2, 3, 64  # the moons preset's MLP
    by_hand = (time_dim * h + h) + (h * h + h) + (d * h + h) + blocks * (2 * h + 2 * (h * h + h)) + (h * d + d)
    assert lines == [f"model: MLP with {by_hand:,} parameters; data: 2,000 examples; device: cpu; precision: fp32"]


def test_step_pictures_are_drawn_from_the_ema_weights_during_training(tmp_path):
    trainer, _, _ = diffusion.trainer(with_train(toy_config(steps=4), sample_every=2), tmp_path)
    tmp_path.mkdir(exist_ok=True)
    seen = []
    draw_picture = trainer.on_sample

    def spy(step, ema_net):
        seen.append((step, ema_net is trainer.ema.model, ema_net.training))
        draw_picture(step, ema_net)

    trainer.on_sample = spy
    trainer.fit()
    assert seen == [(2, True, False)] and not trainer.ema.model.training  # the EMA copy stays in eval mode
    assert sorted(p.name for p in (tmp_path / "steps").iterdir()) == ["step-00000002.png"]


# ---- runs from their directory -------------------------------------------------------------------
def test_load_run_rebuilds_the_network_with_its_ema_or_live_weights(toy_run):
    for ema, name in ((True, "ema"), (False, "model")):
        run = build.load_run(toy_run, ema=ema)
        assert checkpoint.weights_sha256(run.net.state_dict()) == \
            checkpoint.weights_sha256(checkpoint.load_weights(toy_run / f"{name}.safetensors"))
        assert not run.net.training and not any(p.requires_grad for p in run.net.parameters())
        assert run.config == RunConfig.load(toy_run / "config.json") and run.device == torch.device("cpu")
        assert isinstance(run.modality, Points) and run.modality.data == run.config.data
        assert run.base.net is run.net and run.denoiser is not None


def test_load_run_refuses_what_is_not_a_run(tmp_path):
    with pytest.raises(UserError, match="run directory .*missing does not exist; pass the --out directory of a finished training run"):
        build.load_run(tmp_path / "missing")
    with pytest.raises(UserError, match="has no config.json, so it is not a ddpmkit run"):
        build.load_run(tmp_path)


# ---- the training model ----------------------------------------------------------------------------
def compile_or_skip() -> type:
    """torch.compile's module wrapper class, or a skip naming why the compiler cannot run."""
    try:
        torch.compile(lambda x: x.sin() + 1)(torch.randn(4))
        from torch._dynamo.eval_frame import OptimizedModule
    except Exception as e:  # no working C++ compiler for inductor, an unsupported Python, ...
        pytest.skip(f"torch.compile cannot run here: {str(e).strip().splitlines()[0][:200]}")
    return OptimizedModule


def test_compile_trains_like_eager_and_saves_plain_keys(tmp_path, make_trainer):
    OptimizedModule = compile_or_skip()
    config = toy_config(steps=3)
    eager = make_trainer(config, tmp_path / "eager")
    eager.fit()
    compiled = make_trainer(with_train(config, compile=True), tmp_path / "compiled")
    compiled.fit()
    assert isinstance(compiled.model, OptimizedModule) and not isinstance(eager.model, OptimizedModule)
    assert compiled.model._orig_mod is compiled.net  # what the loss calls is the compiled network
    a, b = read_log(tmp_path / "eager"), read_log(tmp_path / "compiled")
    assert len(a) == len(b) == 3
    for x, y in zip(a, b):  # the same math; fused kernels round differently
        assert x["loss"] == pytest.approx(y["loss"], rel=1e-4)
    saved = checkpoint.load_weights(tmp_path / "compiled" / "model.safetensors")
    assert set(saved) == set(eager.net.state_dict())  # no "_orig_mod." prefixes


@pytest.mark.slow
def test_compile_trains_a_tiny_unet_like_eager(tmp_path, make_trainer):
    """The U-Net through inductor (GroupNorm's own backward, channels-last, upsampling convs):
    one level and two steps, about a minute of compiling on a 2-core CPU."""
    OptimizedModule = compile_or_skip()
    config = digits_config(2)
    config = dataclasses.replace(config, net=UNetConfig(base_width=8, channel_mults=(1,), blocks_per_level=1, groups=4))
    eager = make_trainer(config, tmp_path / "eager")
    eager.fit()
    compiled = make_trainer(with_train(config, compile=True), tmp_path / "compiled")
    assert isinstance(compiled.model, OptimizedModule)
    compiled.fit()
    a, b = read_log(tmp_path / "eager"), read_log(tmp_path / "compiled")
    assert len(a) == len(b) == 2
    for x, y in zip(a, b):
        assert x["loss"] == pytest.approx(y["loss"], rel=1e-4) and x["grad_norm"] == pytest.approx(y["grad_norm"], rel=1e-3)
    assert set(checkpoint.load_weights(tmp_path / "compiled" / "model.safetensors")) == set(eager.net.state_dict())
