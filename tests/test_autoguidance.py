"""Autoguidance (Karras et al. 2024) and guidance intervals (Kynkäänniemi et al. 2024): the closed
forms they must meet, the guides a run names, and what the records store."""

import dataclasses
import json
import shutil

import pytest
import torch

from ddpmkit import api, build
from ddpmkit.build import check_guide_fits, load_guide, load_run
from ddpmkit.checkpoint import load_weights, step_dir
from ddpmkit.denoiser import AutoGuidedDenoiser, Denoiser, GuidedDenoiser, in_interval, noise_level
from ddpmkit.errors import UserError
from ddpmkit.samplers import SAMPLERS
from ddpmkit.sampling import Guidance, SamplingRequest, draw, evaluated_at, passes
from ddpmkit.schedules import NoiseSchedule

from analytic import GaussianEps
from helpers import TINY_IMAGES, one_line_error, run_cli

SAMPLERS_TRIED = [("ddim", 6), ("dpm++", 6), ("dpm++sde", 6), ("heun", 5), ("ddpm", 6)]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A 4-step digits run (T = 20) with a checkpoint at every step: it keeps its guide at step 2 (guide_at 0.5)."""
    out = tmp_path_factory.mktemp("autoguide") / "run"
    assert run_cli(["train", "--out", str(out), *TINY_IMAGES, "--steps", "4", "--checkpoint-every", "1", "--keep", "5",
                    "--guide-at", "0.5"])[0] == 0
    return out


def request(sampler: str, steps: int, guide: str = "none", w: float = 2.0, interval=None, **kw) -> SamplingRequest:
    return SamplingRequest(sampler=sampler, steps=steps, guidance=Guidance(autoguide=guide, autoguide_scale=w, interval=interval,
                                                                             **kw))


# ---- closed forms --------------------------------------------------------------------------------
@pytest.mark.parametrize("sampler,steps", SAMPLERS_TRIED)
def test_the_main_model_as_its_own_guide_is_the_unguided_sampler_for_every_w(run_dir, sampler, steps):
    run = load_run(run_dir)
    itself = str(run_dir / "ema.safetensors")
    guided = load_guide(run, itself)
    plain = draw(run, 5, request(sampler, steps)).model
    for w in (0.0, 0.5, 2.0, 3.5, -1.0):
        assert torch.equal(draw(guided, 5, request(sampler, steps, itself, w)).model, plain), w


def test_w_one_is_the_main_model_and_w_zero_the_guide(run_dir):
    run = load_run(run_dir)
    guided = load_guide(run, "step-2")
    main_model = draw(run, 5, request("dpm++sde", 6)).model
    guide_alone = draw(load_run(run_dir, str(step_dir(run_dir, 2) / "ema.safetensors")), 5, request("dpm++sde", 6)).model
    assert not torch.equal(main_model, guide_alone)  # a different model: the test can fail
    assert torch.equal(draw(guided, 5, request("dpm++sde", 6, "step-2", 1.0)).model, main_model)
    assert torch.equal(draw(guided, 5, request("dpm++sde", 6, "step-2", 0.0)).model, guide_alone)
    assert passes(guided, request("dpm++sde", 6, "step-2", 1.0)) == (6, 0)  # w = 1 spends no guide pass


def test_guided_eps_of_gaussian_data_matches_the_closed_form():
    """Data N(m, s²): E[ε | x_t] = √(1−ᾱ)·(x_t − √ᾱ·m)/v with v = ᾱ·s² + 1 − ᾱ. A guide of inflated
    variance s_g² > s² has v_g; autoguidance is the score of p_main^w·p_guide^(1−w), so
    ε_w = √(1−ᾱ)·(x_t − √ᾱ·m)·(w/v + (1 − w)/v_g)."""
    schedule = _cosine(100)
    m, s, s_guide = 0.3, 0.5, 0.9
    main_d = Denoiser(GaussianEps(schedule, m, s).double(), schedule)
    guide_d = Denoiser(GaussianEps(schedule, m, s_guide).double(), schedule)
    x = torch.randn(64, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) * 2
    t = torch.randint(0, 100, (64,), generator=torch.Generator().manual_seed(1))
    abar = schedule.alphas_cumprod[t].double()[:, None]
    v, v_g = abar * s**2 + 1 - abar, abar * s_guide**2 + 1 - abar
    for w in (0.0, 1.0, 2.0, 3.0):
        out = AutoGuidedDenoiser(main_d, guide_d, w)(x, t)
        expected = (1 - abar).sqrt() * (x - abar.sqrt() * m) * (w / v + (1 - w) / v_g)
        torch.testing.assert_close(out.eps.double(), expected, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(out.x0.double(), (x - (1 - abar).sqrt() * out.eps.double()) / abar.sqrt(), rtol=1e-4,
                                   atol=1e-5)  # x̂_0 and ε̂ stay one prediction


def _cosine(T: int) -> NoiseSchedule:
    from ddpmkit.config import DiffusionConfig

    return NoiseSchedule.from_config(DiffusionConfig(schedule="cosine", num_steps=T))


# ---- guidance intervals --------------------------------------------------------------------------
def test_an_interval_outside_the_grid_is_exactly_the_unguided_sampler(run_dir):
    run = load_guide(load_run(run_dir), "step-2")
    r = request("dpm++sde", 6, "step-2", 2.5)
    sigmas = noise_level(run.base.schedule, evaluated_at(run, r)).tolist()  # descending
    between = (sigmas[2] * 1.001, sigmas[1] * 0.999)  # between two grid steps: no evaluation inside
    plain = draw(run, 5, request("dpm++sde", 6)).model
    assert not torch.equal(draw(run, 5, r).model, plain)  # guided everywhere differs: the test can fail
    for interval in (between, (sigmas[0] * 2, sigmas[0] * 3)):
        inside = dataclasses.replace(r, guidance=dataclasses.replace(r.guidance, interval=interval))
        assert torch.equal(draw(run, 5, inside).model, plain)
        assert passes(run, inside) == (6, 0)
    everywhere = dataclasses.replace(r, guidance=dataclasses.replace(r.guidance, interval=(0.0, sigmas[0] * 2)))
    assert torch.equal(draw(run, 5, everywhere).model, draw(run, 5, r).model)


def test_in_interval_and_the_wrappers_mix_rows_by_their_own_noise_level():
    schedule = _cosine(50)
    t = torch.tensor([49, 30, 10, 0])
    sigma = noise_level(schedule, t)
    assert torch.allclose(sigma.double(), ((1 - schedule.alphas_cumprod[t]) / schedule.alphas_cumprod[t]).sqrt().double(),
                          rtol=1e-5)
    interval = (float(sigma[2]) * 0.99, float(sigma[1]) * 1.01)
    assert in_interval(schedule, t, interval).tolist() == [False, True, True, False]
    main_d, guide_d = Denoiser(GaussianEps(schedule, 0.0, 0.5), schedule), Denoiser(GaussianEps(schedule, 0.0, 1.0), schedule)
    x = torch.randn(4, 2, generator=torch.Generator().manual_seed(0))
    mixed = AutoGuidedDenoiser(main_d, guide_d, 3.0, interval)(x, t).eps
    full, plain = AutoGuidedDenoiser(main_d, guide_d, 3.0)(x, t).eps, main_d(x, t).eps
    assert torch.equal(mixed[[1, 2]], full[[1, 2]]) and torch.equal(mixed[[0, 3]], plain[[0, 3]])


def test_classifier_free_guidance_honours_the_interval():
    schedule = _cosine(50)

    class Labelled(torch.nn.Module):  # ε depends on the label: class k has mean k/10, the null label 0
        def forward(self, x, t, label):
            means = torch.where(label == 3, 0.0, label.double() / 10)[:, None]
            return GaussianEps(schedule, 0.0, 0.5)(x - means, t)

    inner = Denoiser(Labelled(), schedule)
    x, t, label = torch.randn(4, 2, generator=torch.Generator().manual_seed(0)), torch.tensor([49, 30, 10, 0]), torch.tensor([1, 2, 1, 2])
    sigma = noise_level(schedule, t)
    interval = (float(sigma[2]) * 0.99, float(sigma[1]) * 1.01)
    mixed = GuidedDenoiser(inner, 2.0, null_label=3, interval=interval)(x, t, label).eps
    full, conditional = GuidedDenoiser(inner, 2.0, null_label=3)(x, t, label).eps, inner(x, t, label).eps
    assert torch.equal(mixed[[1, 2]], full[[1, 2]]) and torch.equal(mixed[[0, 3]], conditional[[0, 3]])
    assert not torch.allclose(full, conditional)


# ---- what a sampler evaluates --------------------------------------------------------------------
@pytest.mark.parametrize("name", list(SAMPLERS))
def test_every_sampler_says_where_it_evaluates_the_network(name):
    sampler = SAMPLERS[name]
    for n in (1, 2, 5, 20):
        grid = list(range(n * 10, -1, -10))[:n]
        at = sampler.evaluated_at(grid)
        assert len(at) == sampler.network_evaluations(n) and set(at) <= set(grid)

        calls = []

        class Counting:
            schedule, variance = _cosine(300), "fixed_small"

            def __call__(self, x, t, label=None):
                calls.append(int(t[0]))
                return Denoiser(GaussianEps(self.schedule, 0.0, 0.5), self.schedule)(x, t, label)

        sampler(Counting(), torch.randn(2, 2), torch.tensor(grid), generator=torch.Generator().manual_seed(0))
        assert calls == at


# ---- guides a run names --------------------------------------------------------------------------
def test_the_trainer_keeps_the_ema_at_guide_at_as_the_guide(run_dir):
    guide, kept = load_weights(run_dir / "guide.safetensors"), load_weights(step_dir(run_dir, 2) / "ema.safetensors")
    assert guide.keys() == kept.keys() and all(torch.equal(guide[k], kept[k]) for k in guide)


def test_a_guide_that_does_not_fit_is_refused_naming_what_differs(run_dir, toy_run):
    config = load_run(run_dir).config
    other = dataclasses.replace(config, diffusion=dataclasses.replace(config.diffusion, num_steps=30, prediction="v"))
    with pytest.raises(UserError, match=r"T 30 against 20; prediction 'v' against 'eps'") as caught:
        check_guide_fits(config, other, run_dir)
    assert "its T 30 against 20; prediction 'v' against 'eps'; a guide" in str(caught.value)  # nothing else differs
    code, _, err = run_cli(["sample", "--run", str(run_dir), "-n", "2", "--autoguide", str(toy_run), "--out",
                            str(run_dir.parent / "refused")])
    assert code == 2
    one_line_error(err, r"does not fit this run: its data 'moons' against 'digits'")
    assert not (run_dir.parent / "refused").exists()
    for name, says in (("step-3000", "no checkpoint of step 3000"), ("posthoc:0.1", "no post-hoc EMA snapshots"),
                       ("nonsense", "names no guide")):
        code, _, err = run_cli(["sample", "--run", str(run_dir), "-n", "2", "--autoguide", name, "--out", str(run_dir.parent / "x")])
        assert code == 2
        one_line_error(err, says)


def test_a_run_without_a_guide_samples_unguided_by_default(run_dir, tmp_path):
    bare = tmp_path / "bare"
    shutil.copytree(run_dir, bare)
    (bare / "guide.safetensors").unlink()
    assert run_cli(["sample", "--run", str(bare), "-n", "3", "--out", str(tmp_path / "s")])[0] == 0
    record = json.loads((tmp_path / "s" / "sample.json").read_text())["sampling"]
    assert "autoguide" not in record and record["network_passes"] == record["nfe"] == 20
    code, _, err = run_cli(["sample", "--run", str(bare), "-n", "3", "--autoguide", "auto", "--out", str(tmp_path / "t")])
    assert code == 2
    one_line_error(err, "keeps no guide")


# ---- records --------------------------------------------------------------------------------------
def test_the_record_stores_the_guide_its_scale_passes_and_interval(run_dir, tmp_path):
    code, out, _ = run_cli(["sample", "--run", str(run_dir), "-n", "3", "--autoguide", "auto", "--out", str(tmp_path / "a")])
    assert code == 0
    record = json.loads((tmp_path / "a" / "sample.json").read_text())["sampling"]
    assert (record["autoguide"], record["autoguide_scale"], record["guide_passes"], record["network_passes"]) == ("auto", 2.0, 20, 40)
    assert "step 2" in record["guide"] and "40 network passes" in out
    code, out, _ = run_cli(["sample", "--run", str(run_dir), "-n", "3", "--sampler", "heun", "--steps", "5", "--autoguide",
                            "step-1", "--autoguide-scale", "1.5", "--guidance-interval", "0.5,4", "--out", str(tmp_path / "b")])
    assert code == 0
    record = json.loads((tmp_path / "b" / "sample.json").read_text())["sampling"]
    run = load_guide(load_run(run_dir), "step-1")
    inside = int(((lambda s: (s >= 0.5) & (s <= 4))(noise_level(run.base.schedule, torch.tensor(
        SAMPLERS["heun"].evaluated_at([19, 14, 10, 5, 0]))))).sum())
    assert record["autoguide"] == "step-1" and record["autoguide_scale"] == 1.5
    assert record["guidance_interval"] == {"sigma": [0.5, 4.0], "evaluations_inside": inside}
    assert record["guide_passes"] == inside and record["network_passes"] == record["nfe"] + inside
    code, _, err = run_cli(["sample", "--run", str(run_dir), "-n", "3", "--autoguide", "none", "--out", str(tmp_path / "c")])
    record = json.loads((tmp_path / "c" / "sample.json").read_text())["sampling"]
    assert "autoguide" not in record and record["network_passes"] == 20


def test_sampling_is_unguided_unless_a_guide_is_asked_for(run_dir):
    assert (run_dir / "guide.safetensors").is_file()  # the run keeps one, and still
    run = build.load_for(run_dir, SamplingRequest())
    assert run.guide is None and SamplingRequest().resolve(run).guidance.guide is None
    asked = SamplingRequest(guidance=api.Guidance(autoguide="auto"))
    run = build.load_for(run_dir, asked)
    assert run.guide is not None and asked.resolve(run).guidance.guide == "auto"
    assert dataclasses.replace(asked, sampler="ddim", steps=5).resolve(run).guidance.guide == "auto"


def test_autoguidance_composes_with_classifier_free_guidance(tmp_path):
    out = tmp_path / "cond"
    assert run_cli(["train", "--conditional", "--out", str(out), *TINY_IMAGES])[0] == 0
    run = load_run(out)
    itself = load_guide(run, str(out / "ema.safetensors"))
    cfg = SamplingRequest(sampler="ddim", steps=5, classes=3, guidance=Guidance(cfg=1.5, autoguide="none"))
    both = dataclasses.replace(cfg, guidance=Guidance(cfg=1.5, autoguide=str(out / "ema.safetensors"), autoguide_scale=3.0))
    assert torch.equal(draw(itself, 4, both).model, draw(run, 4, cfg).model)
    assert passes(itself, both) == (10, 10)  # CFG doubles both the main model's and the guide's passes


def test_bad_guidance_options_are_refused_in_one_line(run_dir, tmp_path):
    for extra, says in ((["--guidance-interval", "3,1"], "0 ≤ LO < HI"), (["--guidance-interval", "1"], "LO,HI"),
                        (["--autoguide-scale", "nan"], "autoguide-scale"),
                        (["--autoguide", "none", "--guidance-interval", "0.1,2"], "neither is on")):
        code, _, err = run_cli(["sample", "--run", str(run_dir), "-n", "2", *extra, "--out", str(tmp_path / "x")])
        assert code == 2, extra
        one_line_error(err, says)


def test_distill_takes_an_autoguided_teacher_and_its_student_samples_on_its_grid(run_dir, tmp_path):
    out = tmp_path / "student"
    code, _, err = run_cli(["distill", "--run", str(run_dir), "--out", str(out), "--to-steps", "2", "--start-steps", "4",
                            "--rounds-steps", "2", "--batch-size", "8", "--autoguide", "step-2", "--autoguide-scale", "2.5",
                            "--no-progress"])
    assert code == 0, err
    recorded = json.loads((out / "distill.json").read_text())
    assert (recorded["settings"]["autoguide"], recorded["settings"]["autoguide_scale"]) == ("step-2", 2.5)
    assert run_cli(["sample", "--run", str(out), "-n", "2", "--out", str(tmp_path / "s")])[0] == 0
    record = json.loads((tmp_path / "s" / "sample.json").read_text())["sampling"]
    assert (record["sampler"], record["steps"], len(record["grid"])) == ("ddim", 2, 2) and "autoguide" not in record


def test_a_posthoc_ema_guide_is_rebuilt_at_the_step_asked(tmp_path):
    out = tmp_path / "posthoc"
    assert run_cli(["train", "--out", str(out), *TINY_IMAGES, "--steps", "4", "--posthoc-ema", "0.05,0.1",
                    "--posthoc-every", "1"])[0] == 0
    run = load_run(out)
    at_2, last = load_guide(run, "posthoc:0.08@2"), load_guide(run, "posthoc:0.08")
    assert "at step 2" in at_2.guide.source and "at step 4" in last.guide.source
    x, t = torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(0)), torch.full((3,), 10)
    assert not torch.equal(at_2.guide.denoiser(x, t).eps, last.guide.denoiser(x, t).eps)
    assert draw(at_2, 2, request("ddim", 4, "posthoc:0.08@2")).model.isfinite().all()
