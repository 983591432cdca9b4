"""--precision: which autocast dtype it means on a device, the Autocast wrapper, bf16 training
on the CPU, and fp16's loss scaling (forced onto the CPU) with its overflow handling."""

import pytest
import torch

from ddpmkit import build, checkpoint
from ddpmkit.distributed import World
from ddpmkit.errors import UserError
from ddpmkit.precision import Autocast, autocast_dtype, cpu_flags, resolve
from ddpmkit.rundir import read_log

from helpers import InfGradAt, NaNAt, digits_config, faulty_trainer, toy_config, with_train


def bf16_or_skip() -> None:
    try:
        autocast_dtype("bf16", torch.device("cpu"))
    except UserError as e:
        pytest.skip(str(e))


def test_autocast_dtype_of_each_precision_and_where_it_cannot_run():
    cpu = torch.device("cpu")
    assert autocast_dtype("fp32", cpu) is None and autocast_dtype("fp32", torch.device("meta")) is None
    with pytest.raises(UserError, match="--precision fp16 \\(with loss scaling\\) needs CUDA; on the CPU use --precision bf16 or fp32"):
        autocast_dtype("fp16", cpu)
    with pytest.raises(UserError, match="--precision bf16 runs on CUDA or the CPU, not on meta; use --precision fp32"):
        autocast_dtype("bf16", torch.device("meta"))


def test_auto_is_bf16_only_where_the_cpu_has_native_bf16_and_fp32_elsewhere(tmp_path):
    """--precision auto (the digits default): a CPU whose flags lack avx512_bf16 and amx_bf16
    (here an AVX-512 Skylake's, injected) trains in fp32; one that has them in bf16, where
    oneDNN can use them; a device that is neither CUDA nor a CPU in fp32."""
    cpu = torch.device("cpu")
    skylake = {"fpu", "sse4_2", "avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512_vnni"}
    assert resolve("auto", cpu, flags=skylake) == "fp32" and autocast_dtype("auto", cpu, flags=skylake) is None
    assert resolve("auto", cpu, flags=set()) == "fp32"  # no /proc/cpuinfo (macOS, Windows)
    assert resolve("auto", torch.device("meta")) == "fp32" and autocast_dtype("auto", torch.device("meta")) is None
    assert resolve("bf16", cpu, flags=skylake) == "bf16"  # an explicit choice is never second-guessed
    zen4 = skylake | {"avx512_bf16"}
    if torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported():
        assert resolve("auto", cpu, flags=zen4) == "bf16" and autocast_dtype("auto", cpu, flags=zen4) == torch.bfloat16
        assert resolve("auto", cpu, flags={"amx_bf16"}) == "bf16"
    else:
        assert resolve("auto", cpu, flags=zen4) == "fp32"  # oneDNN cannot run bf16 in this build
    # The flags come from /proc/cpuinfo's "flags" line (x86) and nothing else.
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nmodel name\t: Test CPU\nflags\t\t: fpu avx2 avx512_bf16\n")
    assert cpu_flags(info) == {"fpu", "avx2", "avx512_bf16"} and cpu_flags(tmp_path / "missing") == frozenset()


def test_autocast_runs_the_network_in_bf16_and_returns_float32():
    bf16_or_skip()
    seen = []

    class Probe(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(4, 4)

        def forward(self, x, t):
            y = self.lin(x)
            seen.append(y.dtype)
            return y

    probe = Probe()
    out = Autocast(probe, "cpu", torch.bfloat16)(torch.randn(3, 4), torch.zeros(3))
    assert seen == [torch.bfloat16] and out.dtype == torch.float32
    assert probe.lin.weight.dtype == torch.float32  # parameters stay fp32


def test_the_training_model_is_autocast_only_when_asked():
    config = build.resolve_config(toy_config(), build.modality(toy_config()).load(0)[1])
    net = build.build_net(config)
    cpu = torch.device("cpu")
    assert build.training_model(net, config, cpu, World()) is net
    bf16_or_skip()
    wrapped = build.training_model(net, with_train(config, precision="bf16"), cpu, World())
    assert isinstance(wrapped, Autocast) and wrapped.net is net and wrapped.dtype == torch.bfloat16


def test_bf16_autocast_on_the_cpu_trains(tmp_path, make_trainer):
    bf16_or_skip()
    bf16 = make_trainer(digits_config(40, "bf16"), tmp_path / "bf16")
    assert isinstance(bf16.model, Autocast)
    bf16.fit()
    losses = [r["loss"] for r in read_log(tmp_path / "bf16")]
    assert sum(losses[-10:]) / 10 < 0.6 * sum(losses[:5]) / 5  # ~1.0 -> ~0.35 in 40 steps
    fp32 = make_trainer(digits_config(2), tmp_path / "fp32")
    fp32.fit()
    # Step 1 predicts exactly 0 (zero-initialised output conv) in any precision; step 2 is
    # the same computation rounded to bf16 inside the network.
    second = read_log(tmp_path / "fp32")[1]["loss"]
    assert 0 < abs(losses[1] - second) < 0.02 * second
    weights = checkpoint.load_weights(tmp_path / "bf16" / "model.safetensors")
    assert all(w.dtype == torch.float32 for w in weights.values())  # parameters stay fp32


def test_a_nonfinite_bf16_step_is_skipped(tmp_path):
    bf16_or_skip()
    config = with_train(toy_config(steps=6), precision="bf16")
    trainer = faulty_trainer(config, tmp_path, lambda net: NaNAt(net, calls={3}))
    assert isinstance(trainer.model, Autocast)
    assert trainer.fit().nonfinite == 1
    assert [r["nonfinite"] for r in read_log(tmp_path)] == [0, 0, 1, 0, 0, 0]
    assert all(torch.isfinite(p).all() for p in trainer.ema.model.parameters())


def fp16_trainer(monkeypatch, tmp_path, wrap):
    """A toy trainer forced onto the fp16 branch (autocast to float16 and a GradScaler) on the CPU."""
    if not torch.amp.is_autocast_available("cpu"):
        pytest.skip("this torch has no CPU autocast")
    # build.training_model looks the dtype up in build (imported there from precision)
    monkeypatch.setattr(build, "autocast_dtype", lambda precision, device: torch.float16 if precision == "fp16" else None)
    trainer = faulty_trainer(with_train(toy_config(steps=10), precision="fp16"), tmp_path, wrap)
    assert trainer.scaler is not None and isinstance(trainer.model, Autocast) and trainer.model.dtype == torch.float16
    return trainer


def test_fp16_overflow_is_skipped_and_lowers_the_scale_without_counting_as_divergence(monkeypatch, tmp_path):
    overflowing = set(range(2, 8))  # six steps in a row: more than max_nonfinite, were they counted as divergence
    trainer = fp16_trainer(monkeypatch, tmp_path, lambda net: InfGradAt(net, overflowing))
    scale = trainer.scaler.get_scale()
    assert len(overflowing) > trainer.train.max_nonfinite
    result = trainer.fit()  # would raise TrainingDiverged
    log = read_log(tmp_path)
    assert result.steps == 10 and result.nonfinite == 0 and trainer.overflow_total == 6
    assert [r["overflow"] for r in log] == [int(r["step"] in overflowing) for r in log]
    assert all(r["nonfinite"] == 0 for r in log) and all(r["loss"] is not None for r in log if r["step"] not in overflowing)
    assert trainer.scaler.get_scale() == scale / 2**6  # halved by each overflow
    assert all(torch.isfinite(p).all() for p in trainer.net.parameters())
    assert checkpoint.load_state(tmp_path / "state.pt")["overflow_total"] == 6


def test_a_nan_loss_under_fp16_is_nonfinite_not_overflow(monkeypatch, tmp_path):
    trainer = fp16_trainer(monkeypatch, tmp_path, lambda net: NaNAt(net, calls={3}))
    result = trainer.fit()
    log = read_log(tmp_path)
    assert result.nonfinite == 1 and trainer.overflow_total == 0
    assert [r["nonfinite"] for r in log][:4] == [0, 0, 1, 0] and all(r["overflow"] == 0 for r in log)
