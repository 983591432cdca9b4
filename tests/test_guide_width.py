"""`train --guide-width W`: autoguidance's reduced-capacity guide (Karras et al. 2024) trained beside
the main network in the same loop. Its shape and when it trains, what `sample --autoguide auto` makes
of it, the record, the refusals, exact resume, and that the main network trains as it did without it."""

import json

import pytest
import torch

from ddpmkit import build, checkpoint
from ddpmkit.config import RunConfig
from ddpmkit.errors import UserError
from ddpmkit.rundir import read_log
from ddpmkit.sampling import Guidance, SamplingRequest, draw
from ddpmkit.training.guide import GUIDE_EMA, GUIDE_MODEL

from helpers import TINY_IMAGES, one_line_error, run_cli, tiny_digits, toy_config, with_train


@pytest.fixture(scope="module")
def narrow(tmp_path_factory):
    """A 4-step digits run (T = 20, base width 8) training a width-4 guide to step 2 (--guide-at 0.5),
    a checkpoint at every step: (the run directory, what train printed)."""
    out = tmp_path_factory.mktemp("narrow") / "run"
    code, printed, err = run_cli(["train", "--out", str(out), *TINY_IMAGES, "--steps", "4", "--guide-at", "0.5", "--guide-width", "4",
                                  "--checkpoint-every", "1", "--keep", "5"])
    assert code == 0, err
    return out, printed


def test_the_guide_is_the_network_at_the_narrower_width_and_stops_at_guide_at(narrow):
    run_dir, printed = narrow
    config = RunConfig.load(run_dir / "config.json")
    guide_config = config.guide_config()
    assert (config.train.guide_width, config.width, guide_config.width) == (4, 8, 4)
    assert guide_config.net == type(config.net)(**{**vars(config.net), "base_width": 4})  # nothing else differs
    main_net, guide_net = build.build_net(config), build.build_net(guide_config)
    kept = checkpoint.load_weights(run_dir / "guide.safetensors")
    checkpoint.load_matching(guide_net, kept, run_dir / "guide.safetensors")  # the narrow network's shapes, every one
    assert sum(v.numel() for v in kept.values()) < sum(p.numel() for p in main_net.parameters()) / 2
    assert checkpoint.weights_metadata(run_dir / "guide.safetensors")["step"] == "2"
    step = lambda n, name: checkpoint.load_weights(checkpoint.step_dir(run_dir, n) / name)  # noqa: E731
    same = lambda a, b: a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)  # noqa: E731
    assert same(kept, step(2, GUIDE_EMA))  # guide.safetensors: the guide's EMA at step 2, not the main EMA's
    assert not same(step(1, GUIDE_MODEL), step(2, GUIDE_MODEL))  # it trains until step 2 ...
    assert same(step(2, GUIDE_MODEL), step(4, GUIDE_MODEL)) and same(step(2, GUIDE_EMA), step(4, GUIDE_EMA))  # ... then stops
    assert "guide: UNet of width 4" in printed and "to step 2" in printed


def test_sample_autoguide_auto_uses_the_narrow_guide_and_records_it(narrow, tmp_path):
    run_dir, _ = narrow
    code, _, err = run_cli(["sample", "--run", str(run_dir), "-n", "4", "--autoguide", "auto", "--out", str(tmp_path / "s")])
    assert code == 0, err
    record = json.loads((tmp_path / "s" / "sample.json").read_text())["sampling"]
    assert record["autoguide"] == "auto" and "step 2 of the width-4 guide" in record["guide"]
    run = build.load_run(run_dir)
    guided = build.load_guide(run, "auto")
    assert guided.guide.denoiser.net.config.base_width == 4
    request = SamplingRequest(sampler="ddim", steps=5)
    plain = draw(run, 4, request).model
    autoguided = draw(guided, 4, SamplingRequest(sampler="ddim", steps=5, guidance=Guidance(autoguide="auto"))).model
    assert torch.isfinite(autoguided).all() and not torch.allclose(autoguided, plain)


@pytest.mark.parametrize("extra,says", [
    (["--guide-width", "8"], r"--guide-width 8 must be smaller than the network's width 8"),
    (["--guide-width", "12"], r"--guide-width 12 must be smaller than the network's width 8"),
    (["--guide-width", "-1"], r"--guide-width must not be negative"),
    (["--guide-width", "6", "--attention-res", "8", "--heads", "4"], r"--guide-width 6 does not make a network: .*attention_heads 4"),
    (["--data", "moons", "--net", "gated-mlp", "--width", "32", "--guide-width", "32"], r"smaller than the network's width 32"),
])
def test_a_guide_width_that_does_not_fit_is_refused_in_one_line_before_anything_is_written(tmp_path, extra, says):
    code, _, err = run_cli(["train", "--out", str(tmp_path / "run"), *TINY_IMAGES, "--steps", "2", *extra])
    assert code == 2
    one_line_error(err, says)
    assert not (tmp_path / "run").exists()


def test_the_api_refuses_it_too_and_zero_is_off():
    config = with_train(tiny_digits(), guide_width=8)
    with pytest.raises(UserError, match="must be smaller than the network's width 8"):
        config.guide_config()
    assert with_train(config, guide_width=0).guide_config() is None
    assert with_train(config, guide_width=0, guide_at=0.0).train.guide_step is None
    assert with_train(config, guide_width=4, guide_at=0.0).train.guide_step == config.train.steps  # trains to the end
    assert with_train(config, guide_width=4, guide_at=0.25).train.guide_step == 3


def test_the_main_network_trains_as_it_does_without_the_guide(tmp_path, make_trainer):
    """The guide's loss adds nothing to the recorded loss and its gradient reaches only the guide:
    without dropout (which draws from the one global RNG), the main network's weights, EMA and log
    are bit for bit those of a run without it."""
    config = toy_config(steps=6, guide_at=0.5)
    alone = make_trainer(config, tmp_path / "alone")
    alone.fit()
    beside = make_trainer(with_train(config, guide_width=32), tmp_path / "beside")
    beside.fit()
    assert [r["loss"] for r in read_log(tmp_path / "alone")] == [r["loss"] for r in read_log(tmp_path / "beside")]
    assert [r["grad_norm"] for r in read_log(tmp_path / "alone")] == [r["grad_norm"] for r in read_log(tmp_path / "beside")]
    for a, b in ((alone.net, beside.net), (alone.ema.model, beside.ema.model)):
        assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    assert beside.guide.net.config.hidden == 32 and alone.guide is None
    kept, main_ema = (checkpoint.load_weights(d / "guide.safetensors") for d in (tmp_path / "beside", tmp_path / "alone"))
    assert kept["inp.weight"].shape[0] == 32 != main_ema["inp.weight"].shape[0]  # the narrow guide's, the other's own


class Crash(Exception):
    pass


def test_resume_with_a_guide_is_exact(tmp_path, make_trainer):
    """Stopped at step 4 (before the guide's step 6) and resumed: the main network, the guide, their EMAs
    and guide.safetensors equal an uninterrupted run's (the tiny U-Net has dropout: the RNG states travel too)."""
    config = tiny_digits(steps=8, checkpoint_every=4, guide_at=0.75, guide_width=4)
    full = make_trainer(config, tmp_path / "full")
    full.fit()

    def crash(step: int) -> None:
        if step == 5:
            raise Crash()

    broken = make_trainer(config, tmp_path / "resumed")
    broken.on_step = crash
    with pytest.raises(Crash):
        broken.fit()
    resumed = make_trainer(config, tmp_path / "resumed")
    assert resumed.resume() == 4
    resumed.fit()
    assert [r["loss"] for r in read_log(tmp_path / "full")] == [r["loss"] for r in read_log(tmp_path / "resumed")]
    for a, b in ((full.net, resumed.net), (full.ema.model, resumed.ema.model), (full.guide.net, resumed.guide.net),
                 (full.guide.ema.model, resumed.guide.ema.model)):
        assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))
    assert full.guide.ema.num_updates == resumed.guide.ema.num_updates == 6
    kept = [checkpoint.load_weights(tmp_path / d / "guide.safetensors") for d in ("full", "resumed")]
    assert all(torch.equal(kept[0][k], kept[1][k]) for k in kept[0])
    state = checkpoint.load_state(tmp_path / "resumed" / "state.pt")
    assert len(state["optimizer"]["param_groups"]) == 2 and "guide" in state  # the guide's moments and EMA travel
