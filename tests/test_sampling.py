"""sampling: the one sampling request (its checks, its defaults resolved against a run, its
record), drawing from a loaded Run (its grid, labels, guidance) and the record of how measurement
samples were drawn."""

import dataclasses
import json

import numpy as np
import pytest
import torch

from ddpmkit import api, build, sampling
from ddpmkit.build import load_run
from ddpmkit.errors import UserError
from ddpmkit.evaluation import image_reference, measures
from ddpmkit.sampling import BALANCED, Guidance, SamplingRequest, check_sampler, draw, labels, picture_steps
from ddpmkit.schedules import timestep_grid


def test_spacing_chooses_the_timestep_grid(toy_run):
    run = load_run(toy_run)
    grids = {}
    for spacing in ("linspace", "leading", "trailing"):
        drawn = draw(run, 16, SamplingRequest(sampler="ddim", steps=5, spacing=spacing, seed=1), keep=list(range(50)))
        grids[spacing] = drawn.trajectory.steps
        assert drawn.trajectory.steps == timestep_grid(50, 5, spacing).tolist()
    assert grids["leading"][0] < 49 == grids["trailing"][0] == grids["linspace"][0]  # leading never starts at T-1


def test_samples_are_seeded_and_in_the_modalitys_data_space(toy_run):
    run = load_run(toy_run)
    a, b, c = (draw(run, 300, SamplingRequest(seed=s, sampler="ddim", steps=10)) for s in (5, 5, 6))
    assert torch.equal(a.model, b.model) and not torch.equal(a.model, c.model)
    assert a.model.shape == (300, 2) and a.data.shape == (300, 2)
    mean, scale = run.config.data.mean, run.config.data.scale
    np.testing.assert_allclose(a.data, a.model.numpy() * scale + np.asarray(mean), rtol=1e-6, atol=1e-6)
    assert a.trajectory is None
    # more samples than one batch: every batch is drawn, the first keeps the trajectory
    batched = draw(run, 10, SamplingRequest(seed=5, sampler="ddim", steps=3, batch=4), keep=[49])
    assert batched.model.shape == (10, 2) and [x.shape for x in batched.trajectory.xs] == [(4, 2)]


def test_a_run_samples_with_its_modalitys_clipping_unless_told(digits_run):
    """Image runs clip x̂_0 to [-1, 1] by default (the data's range); clip="none" does not."""
    run = load_run(digits_run)
    x0s = {}
    for clip in (None, "none"):
        drawn = draw(run, 8, SamplingRequest(seed=0, sampler="ddim", steps=2, clip=clip), keep=[19])
        x0s[clip] = drawn.trajectory.x0s[0]
    assert x0s[None].abs().max() <= 1 and x0s["none"].abs().max() > 1  # an untrained net predicts far out
    assert SamplingRequest().resolve(run).clip == "static" == run.modality.default_clip


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda run: draw(run, 0), "the number of samples must be a positive integer, got 0"),
        (lambda run: draw(run, 4, SamplingRequest(sampler="euler")), "unknown sampler 'euler'; choose one of: ddpm, ddim, dpm\\+\\+, dpm\\+\\+sde, heun"),
        (lambda run: draw(run, 4, SamplingRequest(steps=51)), r"--steps must lie in 1\.\.50 \(the trained T\), got 51"),
        (lambda run: draw(run, 4, SamplingRequest(sampler="ddim", eta=-1)), r"--eta \(0: deterministic DDIM, 1: DDPM-like\) must not be negative, got -1"),
        (lambda run: draw(run, 4, SamplingRequest(eta=1)), "--eta applies to --sampler ddim only, not the default dpm\\+\\+sde"),
        (lambda run: draw(run, 4, SamplingRequest(guidance=Guidance(cfg=2.0))), "--guidance needs a conditional model"),
        (lambda run: draw(run, 4, SamplingRequest(classes=0)), "--class needs a conditional model"),
        (lambda run: draw(run, 4, SamplingRequest(classes="two")), "--class takes a class index or 'all', got 'two'"),
        (lambda run: draw(run, 4, SamplingRequest(guidance=Guidance(classifier=float("nan")))), "--classifier-scale must be a finite number"),
        (lambda run: draw(run, 4, SamplingRequest(clip="dynamic", percentile=1.5)), r"--dynamic-threshold .* must lie in \(0, 1\], got 1.5"),
    ],
)
def test_bad_requests_are_user_errors_naming_the_fix(toy_run, call, message):
    with pytest.raises(UserError, match=message):
        call(load_run(toy_run))


def conditional_run(tmp_path, classes: int = 3, T: int = 50):
    """An untrained conditional moons-shaped run of `classes` classes (its network's labels)."""
    c = api.default_config("moons")
    config = dataclasses.replace(c, conditional=True, diffusion=dataclasses.replace(c.diffusion, num_steps=T))
    config = build.resolve_config(config, build.modality(config).load(0)[1])
    config = dataclasses.replace(config, net=dataclasses.replace(config.net, num_classes=classes))
    return build.make_run(tmp_path, config, build.build_net(config))


def test_check_sampler_and_classes(tmp_path):
    check_sampler("heun", 20, 20)
    for steps in (0, 21):
        with pytest.raises(UserError, match=rf"--steps must lie in 1\.\.20 \(the trained T\), got {steps}"):
            check_sampler("ddpm", steps, 20)
    run = conditional_run(tmp_path, classes=2)
    SamplingRequest(classes=1, guidance=Guidance(cfg=3.0)).resolve(run)
    SamplingRequest(guidance=Guidance(cfg=3.0)).resolve(run)  # unconditional samples of a conditional model
    with pytest.raises(UserError, match=r"class 2 is outside the trained labels 0\.\.1"):
        SamplingRequest(classes=2).resolve(run)
    with pytest.raises(UserError, match=r"--class takes a class index \(0, 1, ...\) or 'all', got -1"):
        SamplingRequest(classes=-1)


def test_the_classes_a_request_asks_for(tmp_path, toy_run):
    run = conditional_run(tmp_path)
    assert labels(run, SamplingRequest(), 4) is None
    assert labels(run, SamplingRequest(classes="2"), 4).tolist() == [2] * 4
    assert labels(run, SamplingRequest(classes="all"), 2).tolist() == [0, 0, 1, 1, 2, 2]  # n per class, class after class
    balanced = labels(run, SamplingRequest(classes=BALANCED), 10)
    assert sorted(balanced.tolist()) == [0, 0, 0, 0, 1, 1, 1, 2, 2, 2]  # as even as 10 allows
    assert torch.equal(balanced, labels(run, SamplingRequest(classes=BALANCED), 10))
    assert not torch.equal(balanced, labels(run, SamplingRequest(classes=BALANCED, seed=1), 10))  # a seeded order
    unconditional = load_run(toy_run)
    assert labels(unconditional, SamplingRequest(classes=BALANCED), 10) is None  # nothing to balance
    with pytest.raises(UserError, match="--class needs a conditional model"):
        labels(unconditional, SamplingRequest(classes="all"), 4)
    assert len(draw(run, 2, SamplingRequest(classes="all", sampler="ddim", steps=2)).model) == 6


def test_a_request_resolves_its_defaults_against_the_run_once(toy_run, tmp_path):
    run = load_run(toy_run)
    resolved = SamplingRequest().resolve(run)
    assert (resolved.sampler, resolved.steps, resolved.clip, resolved.spacing) == ("dpm++sde", 20, "none", "linspace")
    assert resolved.resolve(run) == resolved  # resolving a resolved request changes nothing
    assert SamplingRequest(sampler="ddpm").resolve(run).steps == 50  # a sampler named alone: all T
    assert SamplingRequest(steps=7).resolve(run).sampler == "dpm++sde"
    assert SamplingRequest().resolve(run, ("ddim", None)) == SamplingRequest(sampler="ddim", steps=50, clip="none")  # a method's own
    short = conditional_run(tmp_path, T=10)
    assert SamplingRequest().resolve(short).steps == 10  # the default's 20 steps, at most T
    distilled = dataclasses.replace(run, fixed=sampling.FixedGrid("ddim", (40, 20, 0)))
    own = SamplingRequest().resolve(distilled)
    assert (own.sampler, own.steps) == ("ddim", 3) and SamplingRequest(sampler="ddim").resolve(distilled).steps == 3
    assert sampling.grid(distilled, own).tolist() == [40, 20, 0] and sampling.off_grid_note(distilled, own) is None
    assert "ddim with 5 steps runs it off that grid" in sampling.off_grid_note(distilled, SamplingRequest(steps=5).resolve(distilled))


def test_picture_steps_spread_over_the_sampling_grid():
    assert picture_steps(20, 40) == list(range(20))  # fewer steps than asked for: all of them
    steps = picture_steps(1000, 10)
    assert len(steps) == 10 and steps[0] == 0 and steps[-1] == 999
    assert max(np.diff(steps)) - min(np.diff(steps)) <= 1  # evenly spread
    grid = timestep_grid(1000, 25, "leading")
    assert set(picture_steps(1000, 5, 25, "leading")) <= set(grid.tolist())  # only steps the sampler visits


class RowCounter(torch.nn.Module):
    """Wraps a network and counts the rows it is run on."""

    def __init__(self, net):
        super().__init__()
        self.net, self.rows = net, 0

    def forward(self, x, t, label=None):
        self.rows += len(x)
        return self.net(x, t, label)


@pytest.mark.parametrize("sampler, steps", [("dpm++", 5), ("heun", 4)])
def test_recorded_network_passes_are_the_rows_the_network_runs(sampler, steps, tmp_path):
    c = api.default_config("moons")
    config = dataclasses.replace(c, conditional=True, diffusion=dataclasses.replace(c.diffusion, num_steps=50))
    config = build.resolve_config(config, build.modality(config).load(0)[1])
    net = RowCounter(build.build_net(config))
    run = build.make_run(tmp_path, config, net)
    n = 12
    for w, passes in ((0.0, 1), (2.0, 2)):
        net.rows = 0
        request = SamplingRequest(sampler=sampler, steps=steps, guidance=Guidance(cfg=w), classes=BALANCED)
        data, record = sampling.draw_recorded(run, n, request)
        assert data.shape == (n, 2)
        assert record["nfe"] == sampling.network_evaluations(sampler, steps)
        assert record["network_passes"] == passes * record["nfe"]
        assert net.rows == n * record["network_passes"], w
        assert record["labels"] == "balanced over 2 classes" and record["guidance"] == w
        assert (record["num"], record["sampler"], record["steps"], record["trained_steps_T"]) == (n, sampler, steps, 50)


def test_the_record_of_an_unconditional_run_names_no_labels(toy_run):
    run = load_run(toy_run)
    data, record = sampling.draw_recorded(run, 20, SamplingRequest(sampler="dpm++sde", weights="model", classes=BALANCED))
    assert data.shape == (20, 2)
    assert record == {"num": 20, "sampler": "dpm++sde", "steps": 50, "spacing": "linspace", "nfe": 50, "network_passes": 50,
                      "seed": 0, "weights": "live", "clip": "none", "trained_steps_T": 50}


@pytest.mark.slow
def test_conditional_digits_draw_the_asked_class_more_so_with_guidance(conditional_digits, eval_cache):
    run = conditional_digits
    clf = image_reference(run).extractor  # the own digits classifier (from the cache: the same data as the digits run's)
    labels = torch.arange(10).repeat_interleave(20)
    agree, p_asked = {}, {}
    for w in (0.0, 2.0):
        images = draw(run, 20, SamplingRequest(seed=2, classes="all", guidance=Guidance(cfg=w))).data  # the default sampler
        probs = clf.predict_proba(torch.from_numpy(images).permute(0, 3, 1, 2))
        agree[w] = float((probs.argmax(1) == labels.numpy()).mean())
        p_asked[w] = float(probs[np.arange(len(labels)), labels.numpy()].mean())
    assert agree[0.0] > 0.5, agree  # most samples are the asked digit (chance is 0.1)
    # Guidance trades diversity for adherence: at least as often the asked class (this short
    # run is already near 1.0 without it), and a strictly higher classifier probability for it.
    assert agree[2.0] >= agree[0.0] and p_asked[2.0] > p_asked[0.0], (agree, p_asked)


@pytest.mark.slow
def test_a_conditional_model_still_samples_unconditionally(conditional_digits, eval_cache):
    images = draw(conditional_digits, 300, SamplingRequest(seed=3)).data  # null label throughout, the default sampler
    quality = measures(conditional_digits.modality).quick_measure(conditional_digits)[1](images)
    assert quality["class_entropy"] > 1.8  # many digits, not one
    assert quality["frechet_distance"] < 5.0


@pytest.mark.slow
def test_every_consumer_resolves_the_one_default_request(eval_cache, tmp_path, monkeypatch):
    """Asked for nothing but defaults, every consumer that samples (sample, evaluate,
    compare-samplers, edit, the model card's grid, the post-hoc EMA sweep, --eval-every, the step
    pictures and the end-of-run grid) draws with the same resolved request: the defaults live in
    one place. Inpaint and interpolate have their own (RePaint and DDIM inversion need them)."""
    resolved = []
    original = SamplingRequest.resolve

    def spy(self, run, default=None):
        resolved.append(original(self, run, default))
        return resolved[-1]

    monkeypatch.setattr(SamplingRequest, "resolve", spy)
    c = api.default_config("digits")
    config = dataclasses.replace(
        c, net=dataclasses.replace(c.net, base_width=8, channel_mults=(1, 2), groups=4),
        diffusion=dataclasses.replace(c.diffusion, num_steps=20),
        train=dataclasses.replace(c.train, steps=4, batch_size=8, eval_every=2, eval_samples=16, sample_every=2,
                                  posthoc_ema=(0.1, 0.2), posthoc_every=2))
    run_dir = tmp_path / "run"
    inputs = tmp_path / "inputs.npy"
    np.save(inputs, np.zeros((2, 8, 8, 1), np.uint8))
    consumers = {
        "train (--eval-every, step pictures, end-of-run grid)": lambda: api.train(config, run_dir, progress=False),
        "sample": lambda: api.sample(run_dir, 4, tmp_path / "s"),
        "evaluate": lambda: api.evaluate(run_dir, settings=api.QualitySettings(num=16, kid_subsets=2)),
        "compare-samplers": lambda: api.compare(run_dir, tmp_path / "c", ["dpm++sde"], [20], 8),
        "edit": lambda: api.edit(run_dir, inputs, tmp_path / "e"),
        "export (the card's grid)": lambda: api.export(run_dir, tmp_path / "x"),
        "ema --sweep": lambda: api.sweep_posthoc_ema(run_dir, [0.15], num=16),
    }
    seen = {}
    for name, call in consumers.items():
        resolved.clear()
        call()
        seen[name] = set(resolved)
    expected = SamplingRequest().resolve(load_run(run_dir))
    assert (expected.sampler, expected.steps, expected.clip) == ("dpm++sde", 20, "static")
    # Autoguidance is asked for, never taken by default: a run that keeps a guide (RUN/guide.safetensors)
    # samples its main model alone in every consumer unless --autoguide names one.
    run = build.load_for(run_dir, SamplingRequest())
    guided = SamplingRequest().resolve(run)
    assert guided == expected and run.guide is None
    assert seen == {name: {expected} for name in consumers}
    record = json.loads((tmp_path / "s" / "sample.json").read_text())["sampling"]
    assert record == guided.record(run)  # and every record stores it as resolved
