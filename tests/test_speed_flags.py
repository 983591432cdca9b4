"""--precision, --compile and --grad-checkpoint: they run, train, and leave checkpoints
that look like any other."""

import dataclasses
import json
import re

import pytest
import torch

from ddpmkit import api, checkpoint, train
from ddpmkit.build import build_net, load_data
from ddpmkit.cli import main
from ddpmkit.config import RunConfig
from ddpmkit.distributed import World
from ddpmkit.errors import UserError
from ddpmkit.nets.unet import UNetConfig
from ddpmkit.train import Trainer, autocast_dtype, read_log

from test_train_toy import FaultAt, NaNAt, make_trainer, toy_config


def digits_config(steps: int, precision: str = "fp32") -> RunConfig:
    c = api.default_config("digits")
    return dataclasses.replace(
        c,
        net=UNetConfig(base_width=16, channel_mults=(1, 2), blocks_per_level=1, groups=8),
        diffusion=dataclasses.replace(c.diffusion, num_steps=50),
        train=dataclasses.replace(c.train, steps=steps, batch_size=32, warmup_steps=5, lr_decay="constant",
                                  log_every=1, precision=precision),
    )


def image_trainer(config: RunConfig, run_dir) -> Trainer:
    dataset, data = load_data(config.data, config.seed)
    config = api._fit_net_to_data(dataclasses.replace(config, data=data))
    run_dir.mkdir()
    cpu = torch.device("cpu")
    return Trainer(config, build_net(config), dataset, run_dir, device=cpu, prepare=api._preparer(config, cpu), progress=False)


def bf16_or_skip() -> None:
    try:
        autocast_dtype("bf16", torch.device("cpu"))
    except UserError as e:
        pytest.skip(str(e))


def test_bf16_autocast_on_the_cpu_trains(tmp_path):
    bf16_or_skip()
    bf16 = image_trainer(digits_config(40, "bf16"), tmp_path / "bf16")
    bf16.fit()
    losses = [r["loss"] for r in read_log(tmp_path / "bf16" / "log.jsonl")]
    assert sum(losses[-10:]) / 10 < 0.6 * sum(losses[:5]) / 5  # ~1.0 -> ~0.35 in 40 steps
    fp32 = image_trainer(digits_config(2), tmp_path / "fp32")
    fp32.fit()
    # Step 1 predicts exactly 0 (zero-initialised output conv) in any precision; step 2 is
    # the same computation rounded to bf16 inside the network.
    second = read_log(tmp_path / "fp32" / "log.jsonl")[1]["loss"]
    assert 0 < abs(losses[1] - second) < 0.02 * second
    weights = checkpoint.load_weights(tmp_path / "bf16" / "model.safetensors")
    assert all(w.dtype == torch.float32 for w in weights.values())  # parameters stay fp32


def test_a_nonfinite_bf16_step_is_skipped(tmp_path):
    bf16_or_skip()
    config = toy_config(steps=6)
    config = dataclasses.replace(config, train=dataclasses.replace(config.train, precision="bf16"))
    base = build_net(api._fit_net_to_data(dataclasses.replace(config, data=load_data(config.data, 0)[1])))
    trainer = make_trainer(config, tmp_path, NaNAt(base, calls={3}))
    assert trainer.fit().nonfinite == 1
    assert [r["nonfinite"] for r in read_log(tmp_path / "log.jsonl")] == [0, 0, 1, 0, 0, 0]
    assert all(torch.isfinite(p).all() for p in trainer.ema.model.parameters())


@pytest.mark.skipif(torch.cuda.is_available(), reason="fp16 runs where CUDA is")
def test_fp16_without_cuda_is_a_clear_error(tmp_path, capsys):
    argv = ["train", "--out", str(tmp_path / "r"), "--steps", "1", "--width", "8", "--precision", "fp16", "--device", "cpu"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "fp16" in err and "needs CUDA" in err


class _InfGrad(torch.autograd.Function):
    """Identity forward; +inf gradient backward."""

    @staticmethod
    def forward(ctx, x):
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return torch.full_like(grad, float("inf"))


def InfGradAt(net, calls):  # noqa: N802 - reads as the class it builds
    """On the chosen forward calls the output is unchanged but its gradient is +inf: a finite
    loss whose backward overflows, as a too-high fp16 loss scale does."""
    return FaultAt(net, calls, _InfGrad.apply)


def fp16_trainer(monkeypatch, tmp_path, wrap):
    """A toy trainer forced onto the fp16 branch (autocast to float16 and a GradScaler) on the CPU."""
    if not torch.amp.is_autocast_available("cpu"):
        pytest.skip("this torch has no CPU autocast")
    monkeypatch.setattr(train, "autocast_dtype", lambda precision, device: torch.float16 if precision == "fp16" else None)
    config = toy_config(steps=10)
    config = dataclasses.replace(config, train=dataclasses.replace(config.train, precision="fp16"))
    base = build_net(api._fit_net_to_data(dataclasses.replace(config, data=load_data(config.data, 0)[1])))
    trainer = make_trainer(config, tmp_path, wrap(base))
    assert trainer.scaler is not None
    return trainer


def test_fp16_overflow_is_skipped_and_lowers_the_scale_without_counting_as_divergence(monkeypatch, tmp_path):
    overflowing = set(range(2, 8))  # six steps in a row: more than max_nonfinite, were they counted as divergence
    trainer = fp16_trainer(monkeypatch, tmp_path, lambda net: InfGradAt(net, overflowing))
    scale = trainer.scaler.get_scale()
    assert len(overflowing) > trainer.train.max_nonfinite
    result = trainer.fit()  # would raise TrainingDiverged
    log = read_log(tmp_path / "log.jsonl")
    assert result.steps == 10 and result.nonfinite == 0 and trainer.overflow_total == 6
    assert [r["overflow"] for r in log] == [int(r["step"] in overflowing) for r in log]
    assert all(r["nonfinite"] == 0 for r in log) and all(r["loss"] is not None for r in log if r["step"] not in overflowing)
    assert trainer.scaler.get_scale() == scale / 2**6  # halved by each overflow
    assert all(torch.isfinite(p).all() for p in trainer.net.parameters())
    assert checkpoint.load_state(tmp_path / "state.pt")["overflow_total"] == 6


def test_a_nan_loss_under_fp16_is_nonfinite_not_overflow(monkeypatch, tmp_path):
    trainer = fp16_trainer(monkeypatch, tmp_path, lambda net: NaNAt(net, calls={3}))
    result = trainer.fit()
    log = read_log(tmp_path / "log.jsonl")
    assert result.nonfinite == 1 and trainer.overflow_total == 0
    assert [r["nonfinite"] for r in log][:4] == [0, 0, 1, 0] and all(r["overflow"] == 0 for r in log)


def compile_or_skip() -> type:
    """torch.compile's module wrapper class, or a skip naming why the compiler cannot run."""
    try:
        torch.compile(lambda x: x.sin() + 1)(torch.randn(4))
        from torch._dynamo.eval_frame import OptimizedModule
    except Exception as e:  # no working C++ compiler for inductor, an unsupported Python, ...
        pytest.skip(f"torch.compile cannot run here: {str(e).strip().splitlines()[0][:200]}")
    return OptimizedModule


def test_compile_trains_like_eager_and_saves_plain_keys(tmp_path):
    OptimizedModule = compile_or_skip()
    config = toy_config(steps=3)
    eager = make_trainer(config, tmp_path / "eager")
    eager.fit()
    compiled = make_trainer(dataclasses.replace(config, train=dataclasses.replace(config.train, compile=True)), tmp_path / "compiled")
    compiled.fit()
    assert isinstance(compiled.model, OptimizedModule) and not isinstance(eager.model, OptimizedModule)
    assert compiled.model._orig_mod is compiled.net  # what the loss calls is the compiled network
    a, b = read_log(tmp_path / "eager" / "log.jsonl"), read_log(tmp_path / "compiled" / "log.jsonl")
    for x, y in zip(a, b):  # the same math; fused kernels round differently
        assert x["loss"] == pytest.approx(y["loss"], rel=1e-4)
    saved = checkpoint.load_weights(tmp_path / "compiled" / "model.safetensors")
    assert set(saved) == set(eager.net.state_dict())  # no "_orig_mod." prefixes


@pytest.mark.slow
def test_compile_trains_a_tiny_unet_like_eager(tmp_path):
    """The U-Net through inductor (GroupNorm's own backward, channels-last, upsampling convs):
    one level and two steps, about a minute of compiling on a 2-core CPU."""
    OptimizedModule = compile_or_skip()
    config = digits_config(2)
    config = dataclasses.replace(config, net=UNetConfig(base_width=8, channel_mults=(1,), blocks_per_level=1, groups=4))
    eager = image_trainer(config, tmp_path / "eager")
    eager.fit()
    compiled = image_trainer(dataclasses.replace(config, train=dataclasses.replace(config.train, compile=True)),
                             tmp_path / "compiled")
    assert isinstance(compiled.model, OptimizedModule)
    compiled.fit()
    a, b = read_log(tmp_path / "eager" / "log.jsonl"), read_log(tmp_path / "compiled" / "log.jsonl")
    assert len(a) == len(b) == 2
    for x, y in zip(a, b):
        assert x["loss"] == pytest.approx(y["loss"], rel=1e-4) and x["grad_norm"] == pytest.approx(y["grad_norm"], rel=1e-3)
    assert set(checkpoint.load_weights(tmp_path / "compiled" / "model.safetensors")) == set(eager.net.state_dict())


def test_speed_flags_are_recorded_and_may_change_on_resume(tmp_path, capsys):
    run = tmp_path / "run"
    argv = ["train", "--out", str(run), "--steps", "2", "--timesteps", "10", "--batch-size", "8", "--width", "8",
            "--grad-checkpoint", "--checkpoint-every", "1", "--device", "cpu", "--no-progress"]
    assert main(argv) == 0
    config = json.loads((run / "config.json").read_text())
    assert config["net"]["grad_checkpoint"] is True and config["train"]["precision"] == "fp32"
    extra = ["--precision", "bf16"] if torch.ops.mkldnn._is_mkldnn_bf16_supported() else []
    assert main(["train", "--resume", str(run), "--steps", "3", "--no-grad-checkpoint", *extra, "--device", "cpu", "--no-progress"]) == 0
    config = RunConfig.load(run / "config.json")
    assert config.net.grad_checkpoint is False and config.train.precision == ("bf16" if extra else "fp32")
    assert [r["step"] for r in read_log(run / "log.jsonl")] == [2, 3]  # logged at the end of each call
    capsys.readouterr()
    assert main(["train", "--data", "moons", "--out", str(tmp_path / "toy"), "--grad-checkpoint"]) == 2
    assert re.search("--grad-checkpoint applies to the U-Net", capsys.readouterr().err)


def test_the_global_batch_must_split_over_the_processes(tmp_path):
    config = toy_config(steps=1)
    config = dataclasses.replace(config, train=dataclasses.replace(config.train, batch_size=30, grad_accum=2))
    dataset, data = load_data(config.data, config.seed)
    config = api._fit_net_to_data(dataclasses.replace(config, data=data))
    with pytest.raises(UserError, match="global batch .* 2 × 2"):
        Trainer(config, build_net(config), dataset, tmp_path, device=torch.device("cpu"), prepare=lambda x: x,
                world=World(rank=0, size=2))
