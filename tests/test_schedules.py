import math

import pytest
import torch

from ddpmkit.errors import UserError
from ddpmkit.schedules import SCHEDULES, SPACINGS, NoiseSchedule, make_betas, posterior_coefficients, timestep_grid


@pytest.mark.parametrize("name", SCHEDULES)
@pytest.mark.parametrize("T", [10, 1000, 4000])
def test_alpha_bar_is_product_of_one_minus_beta(name, T):
    s = NoiseSchedule.from_name(name, T)
    assert s.betas.dtype == torch.float64 and s.betas.shape == (T,)
    assert torch.allclose(s.alphas_cumprod, torch.cumprod(1 - s.betas, 0), rtol=1e-12, atol=0)
    assert bool(((s.betas > 0) & (s.betas < 1)).all())
    assert bool((s.alphas_cumprod[1:] < s.alphas_cumprod[:-1]).all()), "ᾱ must strictly decrease"
    assert s.alphas_cumprod_prev[0] == 1.0 and torch.equal(s.alphas_cumprod_prev[1:], s.alphas_cumprod[:-1])


def test_cosine_alpha_bar_matches_closed_form_where_beta_unclipped():
    T, s_ = 1000, 0.008
    sched = NoiseSchedule.from_name("cosine", T)
    f = lambda t: math.cos((t / T + s_) / (1 + s_) * math.pi / 2) ** 2  # noqa: E731
    unclipped = sched.betas < 0.999
    assert unclipped.sum() > 990  # only the last steps are clipped
    last_free = int(torch.nonzero(unclipped).max())
    for t in range(0, last_free + 1, 37):
        assert sched.alphas_cumprod[t].item() == pytest.approx(f(t + 1) / f(0), rel=1e-10)
    assert torch.all(sched.betas <= 0.999)


def test_linear_schedule_endpoints_and_scaling():
    b = make_betas("linear", 1000)
    assert b[0].item() == pytest.approx(1e-4) and b[-1].item() == pytest.approx(0.02)
    b250 = make_betas("linear", 250)  # improved-diffusion's scaling: 1000/T
    assert b250[0].item() == pytest.approx(4e-4) and b250[-1].item() == pytest.approx(0.08)
    # scaling keeps the end-point signal level roughly fixed across T
    abar = lambda T: torch.cumprod(1 - make_betas("linear", T), 0)[-1].item()  # noqa: E731
    assert abar(500) == pytest.approx(abar(2000), rel=0.5)


def test_posterior_tables_and_cast():
    s = NoiseSchedule.from_name("linear", 100)
    assert s.posterior_variance[0] == 0
    assert s.posterior_log_variance_clipped[0] == s.posterior_log_variance_clipped[1]
    assert torch.allclose(s.posterior_variance, s.betas * (1 - s.alphas_cumprod_prev) / (1 - s.alphas_cumprod))
    # fixed_large: log(append(β̃ at index 1, β[1:])) as in Ho et al.'s code (β̃ at index 0 is 0)
    assert s.fixed_large_log_variance[0] == math.log(s.posterior_variance[1]) == s.posterior_log_variance_clipped[0]
    assert torch.equal(s.fixed_large_log_variance[1:], s.betas[1:].log())
    assert s.fixed_large_log_variance.dtype == torch.float64
    f32 = s.to(dtype=torch.float32)
    assert f32.betas.dtype == torch.float32 and s.betas.dtype == torch.float64  # the original is not mutated
    # the general posterior between adjacent steps is the table
    c1, c2, var = posterior_coefficients(s.alphas_cumprod[1:], s.alphas_cumprod[:-1])
    assert torch.allclose(c1, s.posterior_mean_coef1[1:]) and torch.allclose(var, s.posterior_variance[1:])


@pytest.mark.parametrize("spacing", ["linspace", "leading", "trailing"])
@pytest.mark.parametrize("n", [1, 10, 50, 1000])
def test_timestep_grids(spacing, n):
    g = timestep_grid(1000, n, spacing)
    assert g.shape == (n,) and g.dtype == torch.long
    assert bool((g[:-1] > g[1:]).all()), "descending and distinct"
    assert 0 <= int(g.min()) and int(g.max()) <= 999
    if n == 1000:
        assert torch.equal(g, torch.arange(999, -1, -1))
    if spacing in ("linspace", "trailing"):
        assert int(g[0]) == 999
    if spacing in ("linspace", "leading") and n > 1:
        assert int(g[-1]) == 0


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: make_betas("warp", 10), "choose one of: linear, cosine, quadratic, sigmoid"),
        (lambda: make_betas("linear", 0), "positive integer"),
        (lambda: timestep_grid(100, 200), "between 1 and the trained T"),
        (lambda: NoiseSchedule.from_betas(torch.tensor([0.5, 1.0])), "strictly between 0 and 1"),
    ],
)
def test_bad_schedule_input(call, message):
    with pytest.raises(UserError, match=message):
        call()


@pytest.mark.parametrize("name", ["linear", "cosine"])
@pytest.mark.parametrize("spacing", ["linspace", "leading", "trailing"])
def test_respaced_alpha_bar_equals_the_original_at_kept_steps(name, spacing):
    s = NoiseSchedule.from_name(name, 1000)
    grid = timestep_grid(1000, 25, spacing)
    r = s.respace(grid)
    kept = grid.sort().values
    assert r.num_steps == 25
    # float64: the round trip through β = 1 − ᾱ_k/ᾱ_j loses ~1e-16/(ᾱ_k/ᾱ_j) relatively; the
    # cosine schedule's last ratio is ~1e-7, hence 1e-8 rather than machine precision.
    assert torch.allclose(r.alphas_cumprod, s.alphas_cumprod[kept], rtol=1e-8, atol=0)
    assert bool(((r.betas > 0) & (r.betas < 1)).all())
    assert torch.allclose(s.respace(torch.arange(1000)).betas, s.betas, rtol=1e-10)  # keeping all is the identity


@pytest.mark.parametrize("name", ["linear", "cosine"])
@pytest.mark.parametrize("spacing", SPACINGS)
def test_respaced_betas_are_the_jump_betas_the_samplers_use(name, spacing):
    """A sampler walking a grid of the full schedule uses, at each step t -> s, the jump
    β = 1 − ᾱ_t/ᾱ_s (ᾱ_s = 1 after the last step) and its β̃; respace(grid) has the same
    β and β̃ (in ascending order), so sampling on the grid is sampling the respaced process."""
    from ddpmkit.samplers import alpha_bar_pair

    s = NoiseSchedule.from_name(name, 1000)
    grid = timestep_grid(1000, 20, spacing)
    x = torch.zeros(1, 1, dtype=torch.float64)
    pairs = [alpha_bar_pair(s, grid, i, x) for i in range(len(grid))]
    jump_beta = torch.stack([(1 - abar_t / abar_s).flatten() for abar_t, abar_s in pairs]).flatten()
    jump_beta_tilde = torch.stack([posterior_coefficients(abar_t, abar_s)[2].flatten() for abar_t, abar_s in pairs]).flatten()
    r = s.respace(grid)
    assert torch.allclose(r.betas, jump_beta.flip(0), rtol=1e-12, atol=0)
    assert torch.allclose(r.posterior_variance, jump_beta_tilde.flip(0), rtol=1e-6, atol=1e-300)
    assert r.posterior_variance[0] == 0 and jump_beta_tilde[-1] == 0  # the last step adds no noise
    assert bool((r.betas[1:] > s.betas[grid.flip(0)[1:]]).all())  # each jump spans several steps, not β_t


@pytest.mark.parametrize("name", ["linear", "quadratic", "sigmoid"])
def test_beta_start_and_end_are_the_ends_of_the_ranged_schedules(name):
    """The tutorials' ranges: linear 1e-4 .. 0.02 at T = 200 (the annotated DDPM) and sigmoid
    1e-5 .. 5e-3 at T = 100 (a 2-D demo). Linear and quadratic end exactly there; the sigmoid
    runs over sigmoid(±6), so its ends are start + (end − start)·sigmoid(∓6)."""
    from ddpmkit.schedules import beta_range

    for T, start, end in ((200, 1e-4, 0.02), (100, 1e-5, 5e-3)):
        betas = make_betas(name, T, beta_start=start, beta_end=end)
        assert betas.dtype == torch.float64 and len(betas) == T
        if name == "sigmoid":
            s = torch.sigmoid(torch.tensor(6.0, dtype=torch.float64)).item()
            assert betas[0].item() == pytest.approx(start + (end - start) * (1 - s), rel=1e-12)
            assert betas[-1].item() == pytest.approx(start + (end - start) * s, rel=1e-12)
        else:
            assert (betas[0].item(), betas[-1].item()) == (pytest.approx(start, rel=1e-12), pytest.approx(end, rel=1e-12))
        assert bool((betas[1:] >= betas[:-1]).all())
        assert NoiseSchedule.from_name(name, T, start, end).betas.tolist() == betas.tolist()
    # not given: today's 1000/T scaling of Ho et al.'s ends; one end given keeps the other's default
    assert make_betas(name, 250).tolist() == make_betas(name, 250, beta_start=4e-4, beta_end=0.08).tolist()
    assert beta_range(name, 250, beta_end=0.05) == (pytest.approx(4e-4), 0.05)


def test_the_cosine_schedule_takes_no_ends_and_bad_ends_are_refused():
    with pytest.raises(UserError, match="--beta-start/--beta-end set the ends of the linear, quadratic, sigmoid schedules; "
                                        "the cosine schedule is defined by its ᾱ curve"):
        make_betas("cosine", 100, beta_start=1e-4)
    for start, end in ((0.02, 1e-4), (0.0, 0.02), (1e-4, 1.0), (float("nan"), 0.02)):
        with pytest.raises(UserError, match="must satisfy 0 < start ≤ end < 1"):
            make_betas("linear", 100, beta_start=start, beta_end=end)


def test_schedule_tables_label_each_schedule_by_its_ends():
    from ddpmkit.schedules import schedule_tables

    tables = schedule_tables(["linear", "cosine", ("sigmoid", 1e-5, 5e-3)], 100, beta_start=1e-4, beta_end=0.02)
    assert list(tables) == ["linear β 0.0001 → 0.02", "cosine", "sigmoid β 1e-05 → 0.005"]
    assert tables["linear β 0.0001 → 0.02"].betas[-1].item() == pytest.approx(0.02)
    assert torch.equal(tables["cosine"].betas, make_betas("cosine", 100))
