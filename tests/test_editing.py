"""The editing math on exact Gaussian denoisers: SDEdit's strength ends and its posterior mean,
RePaint's jump schedule, its known pixels and what resampling buys, slerp and the DDIM
round trip of interpolation."""

import math

import pytest
import torch

from ddpmkit.denoiser import Denoiser
from ddpmkit.editing import edit_grid, interpolate, jump_schedule, repaint, sdedit, slerp, start_step
from ddpmkit.editing.repaint import network_evaluations
from ddpmkit.errors import UserError
from ddpmkit.samplers import SAMPLERS
from ddpmkit.schedules import NoiseSchedule, timestep_grid

from analytic import GaussianEps, GaussianFullEps

MEAN, STD = 0.5, 0.3


def gaussian(T=100, schedule="linear"):
    sched = NoiseSchedule.from_name(schedule, T)
    return Denoiser(GaussianEps(sched, MEAN, STD), sched)


# ---- SDEdit ------------------------------------------------------------------------------------
def test_strength_zero_is_the_input_and_one_is_plain_sampling():
    den = gaussian()
    x0 = torch.randn(64, 3, generator=torch.Generator().manual_seed(1))
    assert torch.equal(sdedit(den, x0, 0.0, generator=torch.Generator().manual_seed(0)), x0)
    # s = 1: the noise drawn first is x_T, so the edit is sampling from that generator, draw for draw
    edited = sdedit(den, x0, 1.0, sampler="ddim", steps=10, generator=torch.Generator().manual_seed(7))
    g = torch.Generator().manual_seed(7)
    x_T = torch.randn(x0.shape, generator=g)
    assert torch.equal(edited, SAMPLERS["ddim"](den, x_T, timestep_grid(100, 10), generator=g))


def test_edit_grid_starts_at_s_T_and_counts_steps_as_a_full_draw():
    assert start_step(0.5, 1000) == 499 and start_step(0.0004, 1000) is None and start_step(1.0, 20) == 19
    assert torch.equal(edit_grid(0.5, 1000), torch.arange(499, -1, -1))
    grid = edit_grid(0.5, 1000, steps=50)
    assert len(grid) == 25 and int(grid[0]) == 499 and int(grid[-1]) == 0
    assert torch.equal(edit_grid(1.0, 1000, 50, "trailing"), timestep_grid(1000, 50, "trailing"))
    for bad in (-0.1, 1.5, float("nan")):
        with pytest.raises(UserError, match="--strength"):
            start_step(bad, 1000)


def test_sdedit_mean_is_the_posterior_mean_at_t0():
    """With the exact denoiser each ancestral step's mean is the true reverse mean, so the edit's
    mean is E[x_0 | x_t0] averaged over q(x_t0 | x_0): μ + ᾱσ²/(ᾱσ² + 1 − ᾱ)·(x_0 − μ)."""
    den = gaussian()
    x0 = torch.full((4000, 2), 1.4)
    for s in (0.2, 0.5):
        out = sdedit(den, x0, s, generator=torch.Generator().manual_seed(3))
        abar = float(den.schedule.alphas_cumprod[start_step(s, 100)])
        expected = MEAN + abar * STD**2 / (abar * STD**2 + 1 - abar) * (1.4 - MEAN)
        stderr = float(out.std()) / math.sqrt(out.numel())
        assert abs(float(out.mean()) - expected) < 5 * stderr + 1e-3, (s, float(out.mean()), expected)


# ---- RePaint -----------------------------------------------------------------------------------
@pytest.mark.parametrize("n, r, j", [(6, 1, 1), (6, 2, 2), (10, 3, 3), (250, 10, 10), (7, 4, 10)])
def test_jump_schedule_walks_each_stretch_r_times(n, r, j):
    path = jump_schedule(n, r, j)
    assert path[0] == 0 and path[-1] == n and all(abs(b - a) == 1 for a, b in zip(path, path[1:]))
    assert min(path) >= 0 and max(path) == n
    jump_points = len(range(n - 1, j - 1, -j))  # positions n−1, n−1−j, … that are at least j from the noise
    assert network_evaluations(n, r, j) == n + (r - 1) * j * jump_points
    assert sum(b < a for a, b in zip(path, path[1:])) == (r - 1) * j * jump_points  # the jumps back
    if r == 1:
        assert path == list(range(n + 1))


def test_repaint_keeps_the_known_values_and_resampling_harmonises():
    """x ~ N(0, [[1, ρ], [ρ, 1]]) with x_0 known = 1.5: the exact conditional mean of the other
    coordinate is 1.5ρ. Plain replacement (r = 1) misses it far; RePaint's resampling comes close."""
    rho = 0.9
    sched = NoiseSchedule.from_name("linear", 100)
    den = Denoiser(GaussianFullEps(sched, torch.zeros(2), torch.tensor([[1, rho], [rho, 1]])), sched)
    x0 = torch.tensor([[1.5, 0.0]]).repeat(2000, 1)
    keep = torch.tensor([[1.0, 0.0]])
    errors = {}
    for r, j in ((1, 1), (5, 5)):
        x = repaint(den, x0, keep, sched.full_grid(), resample=r, jump=j, generator=torch.Generator().manual_seed(0))
        assert torch.equal(x[:, 0], x0[:, 0])  # the known coordinate is the input exactly
        errors[r] = abs(float(x[:, 1].mean()) - 1.5 * rho)
    assert errors[1] > 0.3 and errors[5] < errors[1] / 3, errors


def test_repaint_with_ddim_and_the_samplers_it_refuses():
    den = gaussian(T=20)
    x0 = torch.zeros(8, 4)
    keep = torch.tensor([[1.0, 1.0, 0.0, 0.0]])
    x = repaint(den, x0, keep, den.schedule.full_grid(), sampler="ddim", resample=2, jump=2,
                generator=torch.Generator().manual_seed(0))
    assert torch.equal(x[:, :2], x0[:, :2]) and not torch.equal(x[:, 2:], x0[:, 2:])
    with pytest.raises(UserError, match="inpaint takes --sampler ddpm or ddim .* not 'dpm\\+\\+'"):
        repaint(den, x0, keep, den.schedule.full_grid(), sampler="dpm++")


# ---- interpolation -----------------------------------------------------------------------------
def test_slerp_keeps_the_sphere():
    a, b = torch.tensor([[3.0, 0.0, 0.0]]), torch.tensor([[0.0, 3.0, 0.0]])
    w = torch.linspace(0, 1, 5)
    path = slerp(a, b, w)
    assert torch.allclose(path[0], a[0]) and torch.allclose(path[-1], b[0])
    assert torch.allclose(path.norm(dim=1), torch.full((5,), 3.0))  # a straight line would dip to 2.12
    assert torch.allclose(path[2], (a[0] + b[0]) / math.sqrt(2))
    assert torch.allclose(slerp(a, a, w), a.repeat(5, 1))  # θ = 0: the same point


def test_interpolation_endpoints_reconstruct_the_inputs():
    """DDIM inversion and decoding invert each other up to their discretisation, whose error
    shrinks with the step (first order): on the exact denoiser at all T = 1000 steps the endpoints
    come back within one 8-bit level (2/255), at 100 steps within several."""
    den = gaussian(T=1000, schedule="cosine")
    g = torch.Generator().manual_seed(0)
    a, b = MEAN + STD * torch.randn(1, 6, generator=g), MEAN + STD * torch.randn(1, 6, generator=g)
    errors = {}
    for n in (100, 1000):
        result = interpolate(den, a, b, 5, timestep_grid(1000, n))
        assert result.frames.shape == (5, 6) and torch.equal(result.reconstructions, result.frames[[0, -1]])
        errors[n] = max(float((result.frames[0] - a[0]).abs().max()), float((result.frames[-1] - b[0]).abs().max()))
    assert errors[1000] < 2 / 255 and errors[1000] < errors[100] / 5, errors
    assert torch.allclose(result.weights, torch.linspace(0, 1, 5, dtype=torch.float64))
    with pytest.raises(UserError, match="--frames must be at least 2"):
        interpolate(den, a, b, 1, den.schedule.full_grid())
