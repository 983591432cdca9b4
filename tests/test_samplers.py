import pytest
import torch

from ddpmkit.denoiser import Denoiser
from ddpmkit.samplers import SAMPLERS, Trajectory
from ddpmkit.schedules import NoiseSchedule, timestep_grid

from analytic import GaussianEps

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
