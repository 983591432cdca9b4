import dataclasses
import math

import pytest
import torch

from ddpmkit import api
from ddpmkit.build import build_schedule, load_run
from ddpmkit.denoiser import Denoiser
from ddpmkit.likelihood import vlb_bpd
from ddpmkit.schedules import NoiseSchedule

from analytic import GaussianEps, GaussianFullEps, WithVariance

MEAN, STD, N = 0.5, 0.4, 4000
EXACT_BPD = (0.5 * math.log(2 * math.pi * STD**2) + 0.5) / math.log(2)  # entropy of N(μ, s²) in bits


@pytest.mark.parametrize("name", ["linear", "cosine"])
def test_vlb_of_the_optimal_gaussian_model_matches_the_closed_form_nll(name):
    """With the exact ε and σ² = β_t at every t (close to the true reverse variance for small
    steps; here a learned variance fixed at f = 1), the bound is tight: E[VLB] = −E[log p(x)]
    up to O(1/T). fixed_large is the same bound except at t = 0, where its decoder has σ² = β̃
    of index 1 (Ho et al. 2020's choice), which costs a closed-form amount on this data."""
    sched = NoiseSchedule.from_name(name, 1000)
    g = torch.Generator().manual_seed(0)
    x0 = MEAN + STD * torch.randn(N, 1, generator=g)
    beta_everywhere = Denoiser(WithVariance(GaussianEps(sched, MEAN, STD), frac=1.0), sched, "eps", "learned_range")
    tight = vlb_bpd(beta_everywhere, x0, discrete=False, generator=torch.Generator().manual_seed(1))
    se = tight.total.std().item() / math.sqrt(N)
    assert tight.total.mean().item() == pytest.approx(EXACT_BPD, abs=4 * se)
    assert tight.terms.shape == (N, 1000) and tight.prior.mean().item() < 1e-3
    # fixed_large: the same noise draws give the same terms for t > 0, and at t = 0 the decoder
    # N(x̂_0, σ²) with x̂_0 = E[x_0 | x_t] costs ½·log(2πσ²) + Var(x_0 | x_t)/(2σ²) nats
    large = vlb_bpd(Denoiser(GaussianEps(sched, MEAN, STD), sched, "eps", "fixed_large"), x0, discrete=False,
                    generator=torch.Generator().manual_seed(1))
    assert torch.allclose(large.terms[:, 1:], tight.terms[:, 1:], rtol=1e-4, atol=1e-6)  # float32 round-off
    abar = sched.alphas_cumprod[0].item()
    v_post = STD**2 * (1 - abar) / (abar * STD**2 + 1 - abar)
    decoder = lambda var: 0.5 * (math.log(2 * math.pi * var) + v_post / var) / math.log(2)  # noqa: E731
    extra = decoder(sched.posterior_variance[1].item()) - decoder(sched.betas[0].item())
    diff = large.terms[:, 0] - tight.terms[:, 0]
    assert diff.mean().item() == pytest.approx(extra, abs=4 * diff.std().item() / math.sqrt(N))
    assert extra > 0.1  # measured: 0.164 (linear), 0.184 (cosine) bits/dim on N(0.5, 0.4²) data
    # σ² = β̃ gives a valid but loose bound: above the NLL by far more than the noise
    loose = vlb_bpd(Denoiser(GaussianEps(sched, MEAN, STD), sched, "eps", "fixed_small"), x0, discrete=False, generator=g)
    assert loose.total.mean().item() > EXACT_BPD + 10 * se


@pytest.mark.slow
def test_learned_variance_gives_a_lower_bound_than_fixed_variance(tmp_path):
    """Nichol & Dhariwal 2021, Sec. 3.1: learning Σ with the hybrid loss tightens L_vlb."""
    bounds = {}
    for variance in ("fixed_small", "learned_range"):
        c = api.default_config("moons")
        config = dataclasses.replace(
            c,
            data=dataclasses.replace(c.data, num_points=5000),
            diffusion=dataclasses.replace(c.diffusion, num_steps=100, variance=variance),
            train=dataclasses.replace(c.train, steps=1500, batch_size=256),
        )
        api.train(config, tmp_path / variance, progress=False)
        run = load_run(tmp_path / variance)
        held_out = api.toy_dataset_from_config(run.config.data)  # fresh points, normalised as in training
        points, _ = api.toy_points("moons", 2000, seed=99)
        x0 = torch.from_numpy((points - held_out.mean) / held_out.scale).float()
        bounds[variance] = vlb_bpd(run.denoiser, x0, discrete=False, generator=torch.Generator().manual_seed(0)).total.mean().item()
    assert bounds["learned_range"] < bounds["fixed_small"] - 0.1, bounds


def exact_log_density_at_t0(sched, x, mean, cov):
    """log N(x; α₀·mean, α₀²·cov + σ₀²·I): the law of x_t at t = 0, where the ODE starts."""
    abar = sched.alphas_cumprod[0]
    C = abar * cov.double() + (1 - abar) * torch.eye(len(mean), dtype=torch.float64)
    return torch.distributions.MultivariateNormal(abar.sqrt() * mean.double(), C).log_prob(x.double())


@pytest.mark.parametrize("name", ["linear", "cosine"])
def test_ode_likelihood_of_the_optimal_gaussian_model_is_the_closed_form_density(name):
    """Point by point, exact divergence: the PF-ODE of the exact ε reproduces the data's density."""
    from ddpmkit.likelihood import ode_log_likelihood

    sched = NoiseSchedule.from_name(name, 1000)
    mean, cov = torch.tensor([0.5, -0.3]), torch.tensor([[0.16, 0.06], [0.06, 0.09]])
    den = Denoiser(GaussianFullEps(sched, mean, cov), sched)
    x = torch.distributions.MultivariateNormal(mean, cov).sample((300,))
    exact = exact_log_density_at_t0(sched, x, mean, cov)
    ode = ode_log_likelihood(den, x, num_points=100, exact_trace=True)
    assert (ode.log_density - exact).abs().max().item() < 0.05  # nats per point (measured ≤ 0.02)
    assert (ode.log_density - exact).mean().abs().item() < 0.01
    assert ode.latent.std().item() == pytest.approx(1.0, rel=0.15)  # encodings look like N(0, I)
    # a model of the wrong data does not pass: shift the mean by one std
    wrong = Denoiser(GaussianFullEps(sched, mean + 0.4, cov), sched)
    assert (ode_log_likelihood(wrong, x, num_points=100).log_density - exact).mean().item() < -0.5


def test_hutchinson_divergence_is_unbiased_when_the_jacobian_is_not_diagonal():
    from ddpmkit.likelihood import ode_log_likelihood

    sched = NoiseSchedule.from_name("cosine", 1000)
    mean, cov = torch.zeros(3), torch.tensor([[0.3, 0.2, 0.0], [0.2, 0.25, 0.1], [0.0, 0.1, 0.1]])
    den = Denoiser(GaussianFullEps(sched, mean, cov), sched)
    x = torch.distributions.MultivariateNormal(mean, cov).sample((2000,))
    exact = ode_log_likelihood(den, x, num_points=60, exact_trace=True).log_density
    hutch = ode_log_likelihood(den, x, num_points=60, exact_trace=False, generator=torch.Generator().manual_seed(0)).log_density
    diff = hutch - exact
    assert diff.std().item() > 1e-3  # a real estimate, noisy per example ...
    assert abs(diff.mean().item()) < 4 * diff.std().item() / len(diff) ** 0.5  # ... and unbiased
