import math

import pytest
import torch

from ddpmkit import process
from ddpmkit.schedules import NoiseSchedule

N = 200_000  # Monte Carlo draws: the std error of a mean is ≤ 1/√N ≈ 0.0022


@pytest.fixture(scope="module")
def sched():
    return NoiseSchedule.from_name("linear", 1000)


@pytest.mark.parametrize("t", [0, 10, 250, 999])
def test_q_sample_mean_and_variance(sched, t):
    g = torch.Generator().manual_seed(t)
    x0 = torch.full((N, 1), 0.7, dtype=torch.float64)
    tt = torch.full((N,), t)
    xt = process.q_sample(sched, x0, tt, torch.randn(x0.shape, generator=g, dtype=torch.float64))
    abar = sched.alphas_cumprod[t].item()
    var = 1 - abar
    # 5 standard errors: mean error std = √(var/N); variance error std ≈ var·√(2/N)
    assert xt.mean().item() == pytest.approx(math.sqrt(abar) * 0.7, abs=5 * math.sqrt(var / N) + 1e-12)
    assert xt.var().item() == pytest.approx(var, rel=5 * math.sqrt(2 / N))
    mean, v = process.q_mean_variance(sched, x0[:2], tt[:2])
    assert torch.allclose(mean, math.sqrt(abar) * x0[:2]) and torch.allclose(v, torch.full_like(v, var))


@pytest.mark.parametrize("t", [0, 5, 100, 600])
def test_stepwise_forward_chain_matches_closed_form(sched, t):
    """Applying q(x_s | x_{s-1}) = N(√α_s x_{s-1}, β_s) for s = 0..t gives q(x_t | x_0)."""
    g = torch.Generator().manual_seed(100 + t)
    x = torch.full((N,), -1.3, dtype=torch.float64)
    for s in range(t + 1):
        x = sched.alphas[s].sqrt() * x + sched.betas[s].sqrt() * torch.randn(N, generator=g, dtype=torch.float64)
    abar = sched.alphas_cumprod[t].item()
    var = 1 - abar
    assert x.mean().item() == pytest.approx(-1.3 * math.sqrt(abar), abs=5 * math.sqrt(var / N))
    assert x.var().item() == pytest.approx(var, rel=5 * math.sqrt(2 / N))
    # and the shape of the law: the 10% and 90% quantiles of a Gaussian
    q = torch.quantile(x[:100_000].float(), torch.tensor([0.1, 0.9]))
    expect = -1.3 * math.sqrt(abar) + torch.tensor([-1.2816, 1.2816]) * math.sqrt(var)
    assert torch.allclose(q, expect.float(), atol=0.03 * math.sqrt(var) + 1e-3)


@pytest.mark.parametrize("name", ["linear", "cosine"])
def test_posterior_equals_product_of_gaussians(name):
    """q(x_{t-1} | x_t, x_0) ∝ q(x_t | x_{t-1}) · q(x_{t-1} | x_0), computed by completing the square."""
    s = NoiseSchedule.from_name(name, 200)
    g = torch.Generator().manual_seed(0)
    t = torch.arange(1, 200)
    x0 = torch.randn(len(t), 3, generator=g, dtype=torch.float64)
    xt = torch.randn(len(t), 3, generator=g, dtype=torch.float64)
    mean, var, logvar = process.q_posterior(s, x0, xt, t)

    alpha, beta = s.alphas[t, None], s.betas[t, None]
    abar_prev = s.alphas_cumprod[t - 1, None]
    # as a function of x_{t-1}: N(x_t; √α x_{t-1}, β) ∝ N(x_{t-1}; x_t/√α, β/α)
    prec = alpha / beta + 1 / (1 - abar_prev)
    expect_mean = (xt * alpha.sqrt() / beta + abar_prev.sqrt() * x0 / (1 - abar_prev)) / prec
    assert torch.allclose(mean, expect_mean, rtol=1e-9, atol=1e-12)
    assert torch.allclose(var, (1 / prec).expand_as(var), rtol=1e-9)
    assert torch.allclose(logvar, torch.log(1 / prec).expand_as(var), rtol=1e-9)


def test_posterior_at_first_step_returns_x0(sched):
    x0, xt = torch.randn(4, 2, dtype=torch.float64), torch.randn(4, 2, dtype=torch.float64)
    mean, var, _ = process.q_posterior(sched, x0, xt, torch.zeros(4, dtype=torch.long))
    assert torch.allclose(mean, x0) and torch.all(var == 0)


@pytest.mark.parametrize("shape", [(8, 2), (8, 3, 4, 4)])
def test_eps_x0_v_conversions_are_inverse(sched, shape):
    g = torch.Generator().manual_seed(1)
    x0 = torch.randn(shape, generator=g, dtype=torch.float64)
    eps = torch.randn(shape, generator=g, dtype=torch.float64)
    t = torch.randint(0, 1000, (shape[0],), generator=g)
    xt = process.q_sample(sched, x0, t, eps)
    assert torch.allclose(process.x0_from_eps(sched, xt, t, eps), x0, atol=1e-8)
    assert torch.allclose(process.eps_from_x0(sched, xt, t, x0), eps, atol=1e-6)
    v = process.v_from_x0_eps(sched, x0, t, eps)
    assert torch.allclose(process.x0_from_v(sched, xt, t, v), x0, atol=1e-10)


def test_normal_kl_matches_torch_distributions():
    g = torch.Generator().manual_seed(2)
    m1, m2 = torch.randn(100, generator=g, dtype=torch.float64), torch.randn(100, generator=g, dtype=torch.float64)
    lv1, lv2 = torch.randn(100, generator=g, dtype=torch.float64), torch.randn(100, generator=g, dtype=torch.float64)
    ours = process.normal_kl(m1, lv1, m2, lv2)
    ref = torch.distributions.kl_divergence(
        torch.distributions.Normal(m1, (0.5 * lv1).exp()), torch.distributions.Normal(m2, (0.5 * lv2).exp())
    )
    assert torch.allclose(ours, ref, rtol=1e-10)


def test_discretized_likelihood_is_a_distribution_over_256_levels():
    levels = torch.linspace(-1, 1, 256, dtype=torch.float64)
    for mean, log_scale in [(0.0, -3.0), (0.8, -1.0), (-0.99, -5.0)]:
        logp = process.discretized_gaussian_log_likelihood(levels, torch.tensor(mean), torch.tensor(log_scale))
        assert logp.exp().sum().item() == pytest.approx(1.0, abs=2e-3)  # tanh approximation of Φ


@pytest.mark.parametrize("name", ["linear", "cosine"])
def test_reverse_variance_of_each_choice_in_the_bound(name):
    """σ² of p(x_{t-1} | x_t): fixed_small β̃_t (β̃ of index 1 at t = 0, where β̃ = 0); fixed_large
    β_t except β̃ of index 1 at t = 0 (Ho et al. 2020's fixedlarge, improved-diffusion's FIXED_LARGE);
    learned f·log β_t + (1 − f)·log β̃_t with the same clipped β̃ and log β_0 at t = 0."""
    s = NoiseSchedule.from_name(name, 100)
    t = torch.tensor([0, 1, 2, 50, 99])
    x = torch.zeros(5, 2, dtype=torch.float64)
    b = s.betas[t]
    bt = s.betas * (1 - s.alphas_cumprod_prev) / (1 - s.alphas_cumprod)  # β̃, written out
    bt_clipped = torch.where(t == 0, bt[1], bt[t])
    expect = {
        "fixed_small": bt_clipped.log(),
        "fixed_large": torch.where(t == 0, bt[1], b).log(),
        "learned_range": 0.3 * b.log() + 0.7 * bt_clipped.log(),
    }
    for variance, want in expect.items():
        frac = torch.full_like(x, 0.3) if variance == "learned_range" else None
        mean, log_var = process.p_mean_variance(s, variance, x + 0.5, t, x, frac)
        assert torch.allclose(log_var.expand_as(x), want[:, None].expand_as(x), rtol=1e-10), variance
    assert bt[1] < s.betas[0]  # fixed_large's decoder at t = 0 is narrower than β_0
