import dataclasses
import hashlib

import pytest
import torch

from ddpmkit import api, checkpoint
from ddpmkit.build import Run, build_denoiser, build_net, load_data, load_run
from ddpmkit.config import RunConfig, TrainConfig
from ddpmkit.errors import UserError
from ddpmkit.nets.unet import count_parameters
from ddpmkit.train import Trainer, TrainingDiverged, lr_factor, read_log


def toy_config(steps=40, **train) -> RunConfig:
    c = api.default_config("moons")
    return dataclasses.replace(
        c,
        data=dataclasses.replace(c.data, num_points=2000),
        diffusion=dataclasses.replace(c.diffusion, num_steps=100),
        train=dataclasses.replace(c.train, steps=steps, batch_size=64, log_every=1, **train),
    )


def make_trainer(config, run_dir, net=None):
    dataset, data = load_data(config.data, config.seed)
    config = api._fit_net_to_data(dataclasses.replace(config, data=data))
    run_dir.mkdir(exist_ok=True)
    (run_dir / "config.json").write_text(config.to_json())
    return Trainer(config, net or build_net(config), dataset, run_dir, device=torch.device("cpu"), prepare=lambda x: x, progress=False)


class FaultAt(torch.nn.Module):
    """Wraps a network; on the chosen forward calls (a set of 1-based call numbers, or "all")
    its output goes through `fault`."""

    def __init__(self, net, calls, fault):
        super().__init__()
        self.net, self.calls, self.fault, self.count = net, calls, fault, 0

    def forward(self, x, t, label=None):
        self.count += 1
        out = self.net(x, t)
        return self.fault(out) if self.calls == "all" or self.count in self.calls else out


def NaNAt(net, calls):  # noqa: N802 - reads as the class it builds
    """A network whose output is NaN on the chosen forward calls."""
    return FaultAt(net, calls, lambda out: out * float("nan"))


@pytest.mark.slow
def test_short_moons_training_beats_an_untrained_model(tmp_path):
    config = toy_config(steps=1500)
    config = dataclasses.replace(config, train=dataclasses.replace(config.train, batch_size=256, log_every=100))
    api.train(config, tmp_path / "run", progress=False)
    run = load_run(tmp_path / "run")
    trained = api.toy_distances(run.config, api.draw(run, 2000, seed=1).data)

    untrained_net = build_net(run.config).eval()
    untrained = Run(tmp_path, run.config, untrained_net, build_denoiser(run.config, untrained_net))
    baseline = api.toy_distances(run.config, api.draw(untrained, 2000, seed=1).data)
    assert trained["mmd"] < 0.1 * baseline["mmd"] and trained["mmd"] < 5e-3
    assert trained["sliced_wasserstein"] < 0.25 * baseline["sliced_wasserstein"]
    for name in ("forward.png", "reverse.png", "loss.png", "diffusion.gif", "samples.png", "metrics.json"):
        assert (tmp_path / "run" / name).stat().st_size > 0


def test_a_nonfinite_step_is_skipped_counted_and_logged(tmp_path):
    config = toy_config(steps=12)
    base = build_net(api._fit_net_to_data(dataclasses.replace(config, data=load_data(config.data, 0)[1])))
    trainer = make_trainer(config, tmp_path, NaNAt(base, calls={3}))
    result = trainer.fit()
    log = read_log(tmp_path / "log.jsonl")
    assert result.steps == 12 and result.nonfinite == 1
    assert [r["nonfinite"] for r in log] == [0, 0, 1] + [0] * 9
    assert log[2]["loss"] is None and all(r["loss"] is not None for r in log if r["step"] != 3)
    assert all(torch.isfinite(p).all() for p in trainer.net.parameters())
    assert all(torch.isfinite(p).all() for p in trainer.ema.model.parameters())


def _digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_diverging_run_stops_and_leaves_the_last_good_checkpoint(tmp_path):
    config = toy_config(steps=10, checkpoint_every=5)
    make_trainer(config, tmp_path).fit()
    before = {p.relative_to(tmp_path): _digest(p) for p in tmp_path.rglob("*.safetensors")}
    assert before

    config = dataclasses.replace(config, train=dataclasses.replace(config.train, steps=30))
    trainer = make_trainer(config, tmp_path)
    trainer.resume()
    trainer.denoiser.net = NaNAt(trainer.net, "all")  # every later step is non-finite
    with pytest.raises(TrainingDiverged, match=r"5 steps in a row .* last good checkpoint .*step-00000010"):
        trainer.fit()
    after = {p.relative_to(tmp_path): _digest(p) for p in tmp_path.rglob("*.safetensors")}
    assert after == before
    log = read_log(tmp_path / "log.jsonl")
    assert [r["step"] for r in log[-5:]] == [11, 12, 13, 14, 15]
    assert [r["nonfinite"] for r in log[-5:]] == [1] * 5


class Crash(Exception):
    pass


def test_resume_reproduces_the_uninterrupted_loss_sequence(tmp_path):
    config = toy_config(steps=30, checkpoint_every=10, warmup_steps=5, lr_decay="cosine")
    full = make_trainer(config, tmp_path / "full")
    full.fit()

    def crash(step, net):
        if step == 20:
            raise Crash()

    broken = make_trainer(dataclasses.replace(config, train=dataclasses.replace(config.train, sample_every=10)), tmp_path / "resumed")
    broken.on_sample = crash
    with pytest.raises(Crash):
        broken.fit()
    resumed = make_trainer(config, tmp_path / "resumed")
    assert resumed.resume() == 20
    resumed.fit()

    a, b = read_log(tmp_path / "full" / "log.jsonl"), read_log(tmp_path / "resumed" / "log.jsonl")
    assert [r["step"] for r in b] == list(range(1, 31))
    assert [r["loss"] for r in a] == [r["loss"] for r in b]  # exact, not approximate
    assert [r["lr"] for r in a] == [r["lr"] for r in b]
    for p, q in zip(full.ema.model.parameters(), resumed.ema.model.parameters()):
        assert torch.equal(p, q)


def test_a_log_record_straddling_a_checkpoint_resumes_exactly(tmp_path):
    """Checkpoints every 6 steps, log records every 4: the record of steps 5-8 is summed
    partly before the checkpoint and partly after the resume."""
    config = toy_config(steps=12, checkpoint_every=6)
    config = dataclasses.replace(config, train=dataclasses.replace(config.train, log_every=4))
    make_trainer(config, tmp_path / "full").fit()

    def crash(step, net):
        raise Crash()

    broken = make_trainer(dataclasses.replace(config, train=dataclasses.replace(config.train, sample_every=6)), tmp_path / "resumed")
    broken.on_sample = crash  # killed right after the checkpoint of step 6
    with pytest.raises(Crash):
        broken.fit()
    resumed = make_trainer(config, tmp_path / "resumed")
    assert resumed.resume() == 6
    resumed.fit()

    without_time = lambda log: [{k: v for k, v in r.items() if k != "elapsed_s"} for r in log]  # noqa: E731
    a, b = read_log(tmp_path / "full" / "log.jsonl"), read_log(tmp_path / "resumed" / "log.jsonl")
    assert [r["step"] for r in b] == [4, 8, 12]
    assert without_time(a) == without_time(b)  # loss, its quarters and the gradient norm, exactly


def test_resuming_a_finished_run_writes_no_checkpoint(tmp_path, monkeypatch):
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
    assert result.steps == 6 and result.final_loss == read_log(tmp_path / "log.jsonl")[-1]["loss"]
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
def test_gradient_clipping_bounds_the_norm_the_optimiser_sees(tmp_path, clip):
    config = toy_config(steps=3, warmup_steps=2, lr_decay="cosine")
    config = dataclasses.replace(config, train=dataclasses.replace(config.train, grad_clip=clip))
    trainer = make_trainer(config, tmp_path)
    seen = []
    norm = lambda: float(torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in trainer.net.parameters()])))  # noqa: E731
    trainer.optimizer.register_step_pre_hook(lambda optimizer, args, kwargs: seen.append(norm()))
    trainer.fit()
    log = read_log(tmp_path / "log.jsonl")  # grad_norm: the norm before clipping
    assert len(seen) == 3 and all(r["grad_norm"] > 1e-2 for r in log)
    if clip:
        assert all(s <= clip * (1 + 1e-5) for s in seen) and all(s == pytest.approx(clip, rel=1e-4) for s in seen)
    else:
        assert seen == pytest.approx([r["grad_norm"] for r in log], rel=1e-5)
    assert [r["lr"] for r in log] == pytest.approx([config.train.lr * lr_factor(s, config.train) for s in range(3)])


def test_train_reports_the_parameter_count(tmp_path):
    config = toy_config(steps=1)
    lines = []
    api.train(config, tmp_path, report=lines.append, progress=False, pictures=False)
    net = build_net(RunConfig.load(tmp_path / "config.json"))
    assert f"model: MLP with {count_parameters(net):,} parameters; data: 2,000 examples; device: cpu" in lines
