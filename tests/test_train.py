"""The training loop: non-finite steps, divergence, exact resumption, checkpoints of the
trainer's state, the learning-rate schedule, gradient clipping and the global batch."""

import hashlib

import pytest
import torch

from ddpmkit import build, checkpoint
from ddpmkit.config import TrainConfig
from ddpmkit.distributed import World
from ddpmkit.errors import UserError
from ddpmkit.rundir import read_log
from ddpmkit.training import Trainer, TrainingDiverged, lr_factor

from helpers import NaNAt, faulty_trainer, tiny_digits, toy_config, with_train


def test_a_nonfinite_step_is_skipped_counted_and_logged(tmp_path):
    """Without the skip, the NaN gradient of step 3 would reach every weight."""
    config = toy_config(steps=12)
    trainer = faulty_trainer(config, tmp_path, lambda net: NaNAt(net, calls={3}))  # the forward pass of step 3
    result = trainer.fit()
    log = read_log(tmp_path)
    assert result.steps == 12 and result.nonfinite == 1
    assert [r["nonfinite"] for r in log] == [0, 0, 1] + [0] * 9
    assert log[2]["loss"] is None and all(r["loss"] is not None for r in log if r["step"] != 3)
    assert all(torch.isfinite(p).all() for p in trainer.net.parameters())
    assert all(torch.isfinite(p).all() for p in trainer.ema.model.parameters())


def _digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_diverging_run_stops_and_leaves_the_last_good_checkpoint(tmp_path, make_trainer):
    config = toy_config(steps=10, checkpoint_every=5)
    make_trainer(config, tmp_path).fit()
    before = {p.relative_to(tmp_path): _digest(p) for p in tmp_path.rglob("*.safetensors")}
    assert before

    trainer = faulty_trainer(with_train(config, steps=30), tmp_path, lambda net: NaNAt(net, "all"))
    assert trainer.resume() == 10  # every later step is non-finite
    with pytest.raises(TrainingDiverged, match=r"5 steps in a row .* last good checkpoint .*step-00000010"):
        trainer.fit()
    after = {p.relative_to(tmp_path): _digest(p) for p in tmp_path.rglob("*.safetensors")}
    assert after == before
    log = read_log(tmp_path)
    assert [r["step"] for r in log[-5:]] == [11, 12, 13, 14, 15]
    assert [r["nonfinite"] for r in log[-5:]] == [1] * 5


class Crash(Exception):
    pass


def test_resume_reproduces_the_uninterrupted_loss_sequence(tmp_path, make_trainer):
    config = toy_config(steps=30, checkpoint_every=10, warmup_steps=5, lr_decay="cosine")
    full = make_trainer(config, tmp_path / "full")
    full.fit()

    def crash(step, net):
        if step == 20:
            raise Crash()

    broken = make_trainer(with_train(config, sample_every=10), tmp_path / "resumed")
    broken.on_sample = crash
    with pytest.raises(Crash):
        broken.fit()
    resumed = make_trainer(config, tmp_path / "resumed")
    assert resumed.resume() == 20
    resumed.fit()

    a, b = read_log(tmp_path / "full"), read_log(tmp_path / "resumed")
    assert [r["step"] for r in b] == list(range(1, 31))
    assert [r["loss"] for r in a] == [r["loss"] for r in b]  # exact, not approximate
    assert [r["lr"] for r in a] == [r["lr"] for r in b]
    for p, q in zip(full.ema.model.parameters(), resumed.ema.model.parameters()):
        assert torch.equal(p, q)


def test_a_log_record_straddling_a_checkpoint_resumes_exactly(tmp_path, make_trainer):
    """Checkpoints every 6 steps, log records every 4: the record of steps 5-8 is summed
    partly before the checkpoint and partly after the resume."""
    config = with_train(toy_config(steps=12, checkpoint_every=6), log_every=4)
    make_trainer(config, tmp_path / "full").fit()

    def crash(step, net):
        raise Crash()

    broken = make_trainer(with_train(config, sample_every=6), tmp_path / "resumed")
    broken.on_sample = crash  # killed right after the checkpoint of step 6
    with pytest.raises(Crash):
        broken.fit()
    resumed = make_trainer(config, tmp_path / "resumed")
    assert resumed.resume() == 6
    resumed.fit()

    without_time = lambda log: [{k: v for k, v in r.items() if k not in ("elapsed_s", "examples_per_s")} for r in log]  # noqa: E731
    a, b = read_log(tmp_path / "full"), read_log(tmp_path / "resumed")
    assert [r["step"] for r in b] == [4, 8, 12]
    assert without_time(a) == without_time(b)  # loss, its quarters and the gradient norm, exactly


def test_resuming_a_finished_run_writes_no_checkpoint(tmp_path, monkeypatch, make_trainer):
    config = toy_config(steps=6, checkpoint_every=3)
    first = make_trainer(config, tmp_path)
    first.fit()
    # the same files with the same contents (the weights even the same inodes: not rewritten)
    files = lambda: {p: (p.suffix != ".safetensors" or p.stat().st_ino, _digest(p)) for p in tmp_path.rglob("*") if p.is_file()}  # noqa: E731
    before = files()

    trainer = make_trainer(config, tmp_path)
    assert trainer.resume() == 6
    monkeypatch.setattr(checkpoint, "save_checkpoint", lambda *a, **k: pytest.fail("a finished run was saved again"))
    result = trainer.fit()
    assert result.steps == 6 and result.final_loss == read_log(tmp_path)[-1]["loss"]
    assert files() == before

    with pytest.raises(UserError, match="already holds checkpoints up to step-00000006, beyond step 0; resume that run"):
        make_trainer(config, tmp_path).fit()  # a new run would write over them
    assert files() == before


def test_lr_factor_warms_up_linearly_then_decays_by_a_cosine_to_zero():
    train = TrainConfig(steps=110, warmup_steps=10, lr_decay="cosine")
    assert lr_factor(0, train) == pytest.approx(0.1)  # the first step already has a non-zero LR
    assert lr_factor(4, train) == pytest.approx(0.5)
    assert lr_factor(9, train) == 1.0 and lr_factor(10, train) == 1.0  # warm-up ends at the peak
    assert lr_factor(60, train) == pytest.approx(0.5)  # half-way through the decay
    assert 0 < lr_factor(109, train) < 1e-3 and lr_factor(110, train) == 0.0
    assert lr_factor(0, TrainConfig(steps=10, lr_decay="cosine")) == 1.0  # no warm-up: starts at the peak
    constant = TrainConfig(steps=110, warmup_steps=10, lr_decay="constant")
    assert [lr_factor(s, constant) for s in (9, 10, 109)] == [1.0, 1.0, 1.0]


@pytest.mark.parametrize("clip", [1e-3, 0.0])
def test_gradient_clipping_bounds_the_norm_the_optimiser_sees(tmp_path, clip, make_trainer):
    config = toy_config(steps=3, warmup_steps=2, lr_decay="cosine")
    config = with_train(config, grad_clip=clip)
    trainer = make_trainer(config, tmp_path)
    seen = []
    norm = lambda: float(torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in trainer.net.parameters()])))  # noqa: E731
    trainer.optimizer.register_step_pre_hook(lambda optimizer, args, kwargs: seen.append(norm()))
    trainer.fit()
    log = read_log(tmp_path)  # grad_norm: the norm before clipping
    assert len(seen) == 3 and all(r["grad_norm"] > 1e-2 for r in log)
    if clip:
        assert all(s <= clip * (1 + 1e-5) for s in seen) and all(s == pytest.approx(clip, rel=1e-4) for s in seen)
    else:
        assert seen == pytest.approx([r["grad_norm"] for r in log], rel=1e-5)
    assert [r["lr"] for r in log] == pytest.approx([config.train.lr * lr_factor(s, config.train) for s in range(3)])


def assert_same_tensors(a: dict, b: dict) -> None:
    assert set(a) == set(b)
    for k in a:
        assert a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]), k


def test_checkpoint_round_trip_is_bit_exact(tmp_path, make_trainer):
    """A checkpoint gives back the trainer's live weights, EMA weights and optimiser state,
    each bit for bit and each in its own place."""
    trainer = make_trainer(tiny_digits(steps=4), tmp_path)
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

    resumed = make_trainer(tiny_digits(steps=4), tmp_path)  # what --resume rebuilds from it
    assert resumed.resume() == 4
    assert_same_tensors(resumed.net.state_dict(), live)
    assert_same_tensors(resumed.ema.model.state_dict(), ema)
    for i, moments in optimizer["state"].items():
        assert_same_tensors(resumed.optimizer.state_dict()["state"][i], moments)
    assert torch.equal(resumed.generator.get_state(), trainer.generator.get_state())


def test_the_global_batch_must_split_over_the_processes(tmp_path):
    config = with_train(toy_config(steps=1), batch_size=30, grad_accum=2)
    kind = build.modality(config)
    dataset, data = kind.load(config.seed)
    config = build.resolve_config(config, data)
    net = build.build_net(config)
    with pytest.raises(UserError, match="--batch-size 30 is the global batch and must be divisible by --grad-accum × processes = 2 × 2"):
        Trainer(config, net, build.build_denoiser(config, net), dataset, tmp_path, modality=kind, device=torch.device("cpu"),
                world=World(rank=0, size=2))
