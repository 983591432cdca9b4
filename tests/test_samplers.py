import pytest
import torch

from ddpmkit.denoiser import Denoiser
from ddpmkit.samplers import SAMPLERS, Trajectory, alpha_bar_pair
from ddpmkit.schedules import NoiseSchedule, posterior_coefficients, timestep_grid

from analytic import GaussianEps, WithVariance

MEAN, STD, N = 0.5, 0.4, 20_000  # data N(0.5, 0.4²); mean std error 0.4/√N ≈ 0.003


def gaussian_denoiser(name="linear", T=1000, variance="fixed_small"):
    sched = NoiseSchedule.from_name(name, T)
    return Denoiser(GaussianEps(sched, MEAN, STD), sched, "eps", variance)


@pytest.mark.parametrize("name, variance", [("linear", "fixed_small"), ("cosine", "fixed_small"), ("linear", "fixed_large")])
def test_ddpm_with_exact_eps_recovers_gaussian_data(name, variance):
    den = gaussian_denoiser(name, variance=variance)
    g = torch.Generator().manual_seed(0)
    x = SAMPLERS["ddpm"](den, torch.randn(N, 1, generator=g), den.schedule.full_grid(), generator=g)
    # Tolerances: 5 standard errors of the estimates plus the O(β) discretisation bias of
    # 1000 ancestral steps (fixed_large's σ² = β adds a little extra variance).
    assert x.mean().item() == pytest.approx(MEAN, abs=5 * STD / N**0.5)
    assert x.std().item() == pytest.approx(STD, rel=0.03 if variance == "fixed_small" else 0.06)


def test_ddpm_on_a_respaced_grid_keeps_the_mean_and_brackets_the_variance():
    """With 20 of 1000 steps the mean stays exact, while σ² = β̃ is too small and σ² = β too
    large: the true reverse variance lies between them (Sec. 3.1 of Nichol & Dhariwal 2021)."""
    stds = {}
    for variance in ("fixed_small", "fixed_large"):
        den = gaussian_denoiser("linear", variance=variance)
        g = torch.Generator().manual_seed(1)
        x = SAMPLERS["ddpm"](den, torch.randn(N, 1, generator=g), timestep_grid(1000, 20), generator=g)
        assert x.mean().item() == pytest.approx(MEAN, abs=5 * STD / N**0.5)
        stds[variance] = x.std().item()
    assert stds["fixed_small"] < 0.9 * STD and stds["fixed_large"] > 1.05 * STD


def test_learned_variance_on_a_respaced_grid_spans_fixed_small_to_fixed_large():
    """On 20 of 1000 steps a learned variance fraction f interpolates the jump's log β̃ and
    log β: f = 0 is fixed_small and f = 1 fixed_large draw for draw (same generator), and
    f = 0.5 draws with σ = (β̃·β)^¼ at every step, strictly between the two."""
    sched = NoiseSchedule.from_name("linear", 1000)
    grid = timestep_grid(1000, 20)
    x_T = torch.randn(N, 1, generator=torch.Generator().manual_seed(2))

    def run(den):
        residuals = []  # x_next − μ̃(x_t, x̂_0): σ·z, with the same z in every run

        def record(*, i, t, x, x0, x_next):
            abar_t, abar_s = alpha_bar_pair(den.schedule, grid, i, x)
            coef_x0, coef_xt, _ = posterior_coefficients(abar_t, abar_s)
            residuals.append(x_next - coef_x0 * x0 - coef_xt * x)

        x = SAMPLERS["ddpm"](den, x_T, grid, generator=torch.Generator().manual_seed(3), callback=record)
        return x, torch.stack([r.std() for r in residuals[:-1]])  # the last step adds no noise

    learned = lambda f: Denoiser(WithVariance(GaussianEps(sched, MEAN, STD), f), sched, "eps", "learned_range")  # noqa: E731
    small, std_small = run(gaussian_denoiser("linear", variance="fixed_small"))
    large, std_large = run(gaussian_denoiser("linear", variance="fixed_large"))
    assert torch.equal(run(learned(0.0))[0], small) and torch.equal(run(learned(1.0))[0], large)
    half, std_half = run(learned(0.5))
    assert bool((std_small < std_half).all() and (std_half < std_large).all()), (std_small, std_half, std_large)
    # the per-step ratio is the closed form: σ_½/σ_small = (β/β̃)^¼ of each jump
    abar = sched.alphas_cumprod[grid]
    beta = 1 - abar[:-1] / abar[1:]
    beta_tilde = beta * (1 - abar[1:]) / (1 - abar[:-1])
    assert torch.allclose((std_half / std_small).double(), (beta / beta_tilde) ** 0.25, rtol=1e-4)
    assert std_small.std() > 0.01 and (beta / beta_tilde).max() > 2  # the steps differ; the two variances too
    # and the samples' spread lies between fixed_small's (too narrow) and fixed_large's (too wide)
    assert small.std() < half.std() < large.std()
    assert half.mean().item() == pytest.approx(MEAN, abs=5 * STD / N**0.5)


def test_an_untrained_denoiser_does_not_pass_that_check():
    """Guards the test above: predicting ε = 0 does not give the data's law."""
    sched = NoiseSchedule.from_name("linear", 1000)
    den = Denoiser(GaussianEps(sched, MEAN, 10.0), sched)
    g = torch.Generator().manual_seed(0)
    x = SAMPLERS["ddpm"](den, torch.randn(N, 1, generator=g), sched.full_grid(), generator=g)
    assert abs(x.std().item() - STD) > 0.1


def test_same_seed_same_samples_and_trajectory_kept():
    den = gaussian_denoiser("cosine", T=100)
    run = lambda seed, cb=None: SAMPLERS["ddpm"](  # noqa: E731
        den, torch.randn(64, 2, generator=torch.Generator().manual_seed(seed)), den.schedule.full_grid(),
        generator=torch.Generator().manual_seed(seed), callback=cb,
    )
    traj = Trajectory(keep=[99, 50, 0])
    a = run(3, traj)
    assert torch.equal(a, run(3)) and not torch.equal(a, run(4))
    assert traj.steps == [99, 50, 0]
    assert [x.shape for x in traj.xs] == [(64, 2)] * 3 and [x.shape for x in traj.x0s] == [(64, 2)] * 3
    # the first kept state is x_T itself, and the last step is taken without noise: x_0 = x̂_0 there
    assert torch.equal(traj.xs[0], torch.randn(64, 2, generator=torch.Generator().manual_seed(3)))
    assert torch.allclose(a, traj.x0s[-1])


# ---- DDIM, DPM-Solver++, Heun --------------------------------------------------------------
def exact_ode_solution(den, x_T, t_start):
    """The probability-flow ODE from x_T at step t_start down to the data, in closed form for
    N(MEAN, STD²) data: with x̃ = x/√ᾱ and σ̃² = (1 − ᾱ)/ᾱ the ODE is dx̃/dσ̃ = ε̂ = σ̃(x̃ − μ)/(s² + σ̃²),
    so x̃ − μ scales as √(s² + σ̃²), and at σ̃ = 0: x_0 = μ + (x̃_T − μ)·s/√(s² + σ̃_T²)."""
    abar = den.schedule.alphas_cumprod[t_start].double()
    sig2 = (1 - abar) / abar
    return MEAN + (x_T.double() / abar.sqrt() - MEAN) * STD / (STD**2 + sig2).sqrt()


def test_ddim_with_eta_one_on_all_steps_is_ddpm():
    """η = 1 gives σ² = β̃ and the DDPM posterior mean (Song et al. 2021, Sec. 4.1): the same
    noise draws give the same samples, so the laws agree too."""
    den = gaussian_denoiser("cosine")
    x_T = torch.randn(5000, 2, generator=torch.Generator().manual_seed(5))
    grid = den.schedule.full_grid()
    ddpm = SAMPLERS["ddpm"](den, x_T, grid, generator=torch.Generator().manual_seed(6))
    ddim = SAMPLERS["ddim"](den, x_T, grid, generator=torch.Generator().manual_seed(6), eta=1.0)
    assert torch.allclose(ddim, ddpm, atol=1e-3)  # float32 round-off over 1000 steps
    assert ddim.mean().item() == pytest.approx(MEAN, abs=5 * STD / 10_000**0.5)
    assert ddim.std().item() == pytest.approx(STD, rel=0.03)


@pytest.mark.parametrize("steps", [1000, 20])
def test_first_order_sde_dpm_solver_is_ddpm_draw_for_draw(steps):
    """SDE-DPM-Solver++ at first order takes DDPM's ancestral step with σ² = β̃ exactly
    (Lu et al. 2022): the same noise draws give the same samples, on every grid."""
    den = gaussian_denoiser("cosine")
    x_T = torch.randn(5000, 2, generator=torch.Generator().manual_seed(5))
    grid = timestep_grid(1000, steps)
    ddpm = SAMPLERS["ddpm"](den, x_T, grid, generator=torch.Generator().manual_seed(6))
    sde = SAMPLERS["dpm++sde"](den, x_T, grid, generator=torch.Generator().manual_seed(6), order=1)
    assert torch.allclose(sde, ddpm, atol=1e-3)  # float32 round-off over the steps
    assert not torch.allclose(SAMPLERS["dpm++sde"](den, x_T, grid, generator=torch.Generator().manual_seed(7)), ddpm, atol=0.1)


@pytest.mark.parametrize("name", ["linear", "cosine"])
def test_sde_dpm_solver_at_20_steps_keeps_the_variance_ancestral_ddpm_loses(name):
    """On 20 of 1000 steps DDPM's σ² = β̃ makes the samples too narrow (std 0.30 linear, 0.34
    cosine, of 0.4); the second-order SDE solver, on the same grid and with the same number of
    network calls, has under 40% of that error (measured: 0.366 and 0.410)."""
    den = gaussian_denoiser(name)
    stds = {}
    for sampler in ("ddpm", "dpm++sde"):
        g = torch.Generator().manual_seed(1)
        x = SAMPLERS[sampler](den, torch.randn(N, 1, generator=g), timestep_grid(1000, 20), generator=g)
        assert x.mean().item() == pytest.approx(MEAN, abs=5 * STD / N**0.5)
        stds[sampler] = x.std().item()
    assert abs(stds["dpm++sde"] - STD) < abs(stds["ddpm"] - STD) / 2.5, stds


def test_ddim_with_eta_zero_is_deterministic_and_its_inversion_returns_the_input():
    den = gaussian_denoiser("linear")
    grid = timestep_grid(1000, 100)
    x_T = torch.randn(2000, 2, generator=torch.Generator().manual_seed(0))
    a = SAMPLERS["ddim"](den, x_T, grid, generator=torch.Generator().manual_seed(1))
    b = SAMPLERS["ddim"](den, x_T, grid, generator=torch.Generator().manual_seed(2))
    assert torch.equal(a, b)
    assert a.std().item() == pytest.approx(STD, rel=0.05)  # and it samples the data's law
    from ddpmkit.samplers.ddim import invert

    x0 = MEAN + STD * torch.randn(2000, 2, generator=torch.Generator().manual_seed(3))
    latent = invert(den, x0, grid)
    # encoding is the exact ODE map run backwards, up to the solver's error ...
    abar_T = den.schedule.alphas_cumprod[grid[0]]
    exact_latent = abar_T.sqrt() * (MEAN + (x0 - MEAN) * (STD**2 + (1 - abar_T) / abar_T).sqrt() / STD)
    assert (latent - exact_latent).abs().max().item() < 0.05 * exact_latent.abs().max().item()
    assert latent.std().item() == pytest.approx(1.0, rel=0.05)  # latents look like N(0, I)
    # ... and decoding returns the input, within the first-order error of both passes
    err = {n: (SAMPLERS["ddim"](den, invert(den, x0, timestep_grid(1000, n)), timestep_grid(1000, n)) - x0).abs().mean().item()
           for n in (100, 500)}
    assert err[100] < 0.03 and err[500] < 0.01, err  # measured 0.021 and 0.0043 (data std 0.4)


def test_dpm_solver_first_order_is_ddim():
    den = gaussian_denoiser("cosine")
    grid = timestep_grid(1000, 15)
    x_T = torch.randn(500, 2, generator=torch.Generator().manual_seed(0))
    first = SAMPLERS["dpm++"](den, x_T, grid, order=1)
    assert torch.allclose(first, SAMPLERS["ddim"](den, x_T, grid), atol=1e-5)


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_second_order_solvers_beat_ddim_against_the_exact_ode_solution(schedule):
    """At 20 steps DPM-Solver++(2M) and Heun land closer to the exact PF-ODE endpoint than DDIM."""
    den = gaussian_denoiser(schedule)
    grid = timestep_grid(1000, 20)
    x_T = torch.randn(2000, 2, generator=torch.Generator().manual_seed(0))
    exact = exact_ode_solution(den, x_T, int(grid[0]))
    err = {name: (SAMPLERS[name](den, x_T, grid).double() - exact).abs().mean().item() for name in ("ddim", "dpm++", "heun")}
    assert err["dpm++"] < 0.7 * err["ddim"], err
    assert err["heun"] < 0.5 * err["ddim"], err
    # and all three solve the right ODE: more steps shrink DDIM's error
    fine = (SAMPLERS["ddim"](den, x_T, timestep_grid(1000, 200)).double() - exact).abs().mean().item()
    assert fine < 0.3 * err["ddim"], (fine, err)


@pytest.mark.parametrize("name, steps", [("ddim", 100), ("dpm++", 25), ("dpm++sde", 25), ("heun", 25)])
def test_every_sampler_recovers_gaussian_data_and_repeats_with_the_same_seed(name, steps):
    """(DDIM, first order, needs more steps: at 25 its std is 0.370 of 0.4; at 100, 0.392.)"""
    den = gaussian_denoiser("cosine")
    grid = timestep_grid(1000, steps)
    draw = lambda seed: SAMPLERS[name](  # noqa: E731
        den, torch.randn(N, 1, generator=torch.Generator().manual_seed(seed)), grid, generator=torch.Generator().manual_seed(seed)
    )
    x = draw(7)
    assert torch.equal(x, draw(7)) and not torch.equal(x, draw(8))
    assert x.mean().item() == pytest.approx(MEAN, abs=5 * STD / N**0.5)
    assert x.std().item() == pytest.approx(STD, rel=0.03)


class CountingDenoiser:
    """Wraps a denoiser and records the batch size of every call: what a sampler really spends."""

    def __init__(self, inner):
        self.inner, self.calls = inner, []
        self.schedule, self.variance = inner.schedule, inner.variance

    def __call__(self, x_t, t, label=None):
        self.calls.append(len(x_t))
        return self.inner(x_t, t, label)


@pytest.mark.parametrize("name", list(SAMPLERS))
@pytest.mark.parametrize("steps", [1, 2, 3, 5, 20])
def test_declared_network_evaluations_are_the_denoiser_calls_each_sampler_makes(name, steps):
    """SAMPLERS[name].network_evaluations(n) (the NFE compare-samplers and evaluate record) is
    the number of denoiser calls the sampler makes on a grid of n steps, each on the whole batch;
    and calling the Sampler entry is calling its function."""
    den = CountingDenoiser(gaussian_denoiser("cosine", T=100))
    x_T = torch.randn(8, 2, generator=torch.Generator().manual_seed(0))
    grid = timestep_grid(100, steps)
    x = SAMPLERS[name](den, x_T, grid, generator=torch.Generator().manual_seed(1))
    assert den.calls == [8] * SAMPLERS[name].network_evaluations(steps)
    assert torch.equal(x, SAMPLERS[name].sample(den.inner, x_T, grid, generator=torch.Generator().manual_seed(1)))
