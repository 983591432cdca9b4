"""sampling: drawing from a loaded Run (its grid, labels, guidance, the checks of how samples
are asked for) and the record of how measurement samples were drawn."""

import dataclasses

import numpy as np
import pytest
import torch

from ddpmkit import api, build, sampling
from ddpmkit.build import load_run
from ddpmkit.errors import UserError
from ddpmkit.evaluation import image_reference
from ddpmkit.sampling import SampleSettings, balanced_labels, check_labels, check_sampler, class_labels, draw, picture_steps
from ddpmkit.schedules import timestep_grid


def test_spacing_chooses_the_timestep_grid(toy_run):
    run = load_run(toy_run)
    grids = {}
    for spacing in ("linspace", "leading", "trailing"):
        drawn = draw(run, 16, sampler="ddim", steps=5, spacing=spacing, keep=list(range(50)), seed=1)
        grids[spacing] = drawn.trajectory.steps
        assert drawn.trajectory.steps == timestep_grid(50, 5, spacing).tolist()
    assert grids["leading"][0] < 49 == grids["trailing"][0] == grids["linspace"][0]  # leading never starts at T-1


def test_samples_are_seeded_and_in_the_modalitys_data_space(toy_run):
    run = load_run(toy_run)
    a, b, c = (draw(run, 300, seed=s, sampler="ddim", steps=10) for s in (5, 5, 6))
    assert torch.equal(a.model, b.model) and not torch.equal(a.model, c.model)
    assert a.model.shape == (300, 2) and a.data.shape == (300, 2)
    mean, scale = run.config.data.mean, run.config.data.scale
    np.testing.assert_allclose(a.data, a.model.numpy() * scale + np.asarray(mean), rtol=1e-6, atol=1e-6)
    assert a.trajectory is None
    # more samples than one batch: every batch is drawn, the first keeps the trajectory
    batched = draw(run, 10, seed=5, sampler="ddim", steps=3, keep=[49], batch_size=4)
    assert batched.model.shape == (10, 2) and [x.shape for x in batched.trajectory.xs] == [(4, 2)]


def test_a_run_samples_with_its_modalitys_clipping_unless_told(digits_run):
    """Image runs clip x̂_0 to [-1, 1] by default (the data's range); clip="none" does not."""
    run = load_run(digits_run)
    x0s = {}
    for clip in (None, "none"):
        drawn = draw(run, 8, seed=0, sampler="ddim", steps=2, clip=clip, keep=[19])
        x0s[clip] = drawn.trajectory.x0s[0]
    assert x0s[None].abs().max() <= 1 and x0s["none"].abs().max() > 1  # an untrained net predicts far out
    assert sampling.sampling_denoiser(run) is run.denoiser


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda run: draw(run, 0), "the number of samples must be a positive integer, got 0"),
        (lambda run: draw(run, 4, sampler="euler"), "unknown sampler 'euler'; choose one of: ddpm, ddim, dpm\\+\\+, dpm\\+\\+sde, heun"),
        (lambda run: draw(run, 4, steps=51), r"--steps must lie in 1\.\.50 \(the trained T\), got 51"),
        (lambda run: draw(run, 4, sampler="ddim", eta=-1), r"--eta \(0: deterministic DDIM, 1: DDPM-like\) must not be negative, got -1"),
        (lambda run: draw(run, 4, guidance=2.0), "--guidance needs a conditional model"),
        (lambda run: draw(run, 4, labels=torch.zeros(4, dtype=torch.long)), "--class needs a conditional model"),
    ],
)
def test_bad_requests_are_user_errors_naming_the_fix(toy_run, call, message):
    with pytest.raises(UserError, match=message):
        call(load_run(toy_run))


def test_check_sampler_and_labels():
    check_sampler("heun", 20, 20)
    check_sampler("ddpm", None, 20)
    for steps in (0, 21):
        with pytest.raises(UserError, match=rf"--steps must lie in 1\.\.20 \(the trained T\), got {steps}"):
            check_sampler("ddpm", steps, 20)
    config = api.default_config("moons")
    conditional = dataclasses.replace(config, net=dataclasses.replace(config.net, num_classes=2))
    check_labels(conditional, torch.tensor([0, 1]), 3.0)
    check_labels(conditional, None, 3.0)  # unconditional samples of a conditional model
    for bad in (2, -1):
        with pytest.raises(UserError, match=rf"class {bad} is outside the trained labels 0\.\.1"):
            check_labels(conditional, torch.tensor([0, bad]), 0.0)


def test_class_labels_and_balanced_labels():
    config = api.default_config("moons")
    conditional = dataclasses.replace(config, net=dataclasses.replace(config.net, num_classes=3))
    assert class_labels(conditional, None, 4) is None
    assert class_labels(conditional, "2", 4).tolist() == [2] * 4
    assert class_labels(conditional, "all", 2).tolist() == [0, 0, 1, 1, 2, 2]  # n per class, class after class
    with pytest.raises(UserError, match="--class takes a class index or 'all', got 'two'"):
        class_labels(conditional, "two", 4)
    with pytest.raises(UserError, match="--class needs a conditional model"):
        class_labels(config, "all", 4)
    labels = balanced_labels(conditional, 10, seed=0)
    assert sorted(labels.tolist()) == [0, 0, 0, 0, 1, 1, 1, 2, 2, 2]  # as even as 10 allows
    assert torch.equal(labels, balanced_labels(conditional, 10, seed=0))
    assert not torch.equal(labels, balanced_labels(conditional, 10, seed=1))  # a seeded order
    assert balanced_labels(config, 10, seed=0) is None


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
        data, record = sampling.draw_recorded(run, SampleSettings(num=n, sampler=sampler, steps=steps, guidance=w))
        assert data.shape == (n, 2)
        assert record["nfe"] == sampling.network_evaluations(sampler, steps)
        assert record["network_passes"] == passes * record["nfe"] == sampling.network_passes(sampler, steps, w)
        assert net.rows == n * record["network_passes"], w
        assert record["labels"] == "balanced over 2 classes" and record["guidance"] == w
        assert (record["num"], record["sampler"], record["steps"], record["trained_steps_T"]) == (n, sampler, steps, 50)


def test_the_record_of_an_unconditional_run_names_no_labels(toy_run):
    run = load_run(toy_run)
    data, record = sampling.draw_recorded(run, SampleSettings(num=20, steps=None, weights="model"))
    assert data.shape == (20, 2)
    assert record == {"num": 20, "sampler": "dpm++sde", "steps": 50, "nfe": 50, "network_passes": 50, "seed": 0,
                      "weights": "live", "clip": "none", "trained_steps_T": 50}


@pytest.mark.slow
def test_conditional_digits_draw_the_asked_class_more_so_with_guidance(conditional_digits, eval_cache):
    run = conditional_digits
    clf = image_reference(run).extractor  # the own digits classifier (from the cache: the same data as the digits run's)
    labels = torch.arange(10).repeat_interleave(20)
    agree, p_asked = {}, {}
    for w in (0.0, 2.0):
        images = draw(run, len(labels), seed=2, sampler=None, labels=labels, guidance=w).data  # the run's default sampler
        probs = clf.predict_proba(torch.from_numpy(images).permute(0, 3, 1, 2))
        agree[w] = float((probs.argmax(1) == labels.numpy()).mean())
        p_asked[w] = float(probs[np.arange(len(labels)), labels.numpy()].mean())
    assert agree[0.0] > 0.5, agree  # most samples are the asked digit (chance is 0.1)
    # Guidance trades diversity for adherence: at least as often the asked class (this short
    # run is already near 1.0 without it), and a strictly higher classifier probability for it.
    assert agree[2.0] >= agree[0.0] and p_asked[2.0] > p_asked[0.0], (agree, p_asked)


@pytest.mark.slow
def test_a_conditional_model_still_samples_unconditionally(conditional_digits, eval_cache):
    images = draw(conditional_digits, 300, seed=3, sampler=None).data  # null label throughout, the run's default sampler
    quality = conditional_digits.modality.quick_measure(conditional_digits)[1](images)
    assert quality["class_entropy"] > 1.8  # many digits, not one
    assert quality["frechet_distance"] < 5.0
