import numpy as np
import pytest

from ddpmkit.metrics import median_bandwidth, mmd_rbf, sliced_wasserstein


def gauss(n, shift=0.0, seed=0, d=2):
    return np.random.default_rng(seed).standard_normal((n, d)) + shift


def test_mmd_near_zero_for_same_law_and_grows_with_shift():
    a, b = gauss(1500, seed=1), gauss(1500, seed=2)
    same = mmd_rbf(a, b)
    assert abs(same) < 2e-3  # unbiased: fluctuates around 0 at the 1/n scale
    shifts = [mmd_rbf(a, gauss(1500, s, seed=3)) for s in (0.25, 0.5, 1.0)]
    assert shifts[0] > 5 * abs(same) and shifts[0] < shifts[1] < shifts[2]


def test_mmd_with_known_bandwidth_matches_closed_form():
    """Point masses at 0 and at distance d: MMD² = 2 − 2·exp(−d²/(2σ²))."""
    x, y = np.zeros((50, 2)), np.full((50, 2), [3.0, 4.0])
    assert mmd_rbf(x, y, bandwidth=5.0) == pytest.approx(2 - 2 * np.exp(-25 / 50), rel=1e-9)


def test_median_bandwidth_of_two_points():
    assert median_bandwidth(np.array([[0.0, 0.0]]), np.array([[3.0, 4.0]])) == pytest.approx(5.0)


def test_sliced_wasserstein_of_a_shift_matches_closed_form():
    """For Q = P shifted by δ, W₂ along direction θ is |θᵀδ|, and E_θ[(θᵀδ)²] = ‖δ‖²/D."""
    a = gauss(20_000, seed=4)
    delta = np.array([0.6, -0.8])
    sw = sliced_wasserstein(a, a + delta, num_projections=2000)
    assert sw == pytest.approx(np.linalg.norm(delta) / np.sqrt(2), rel=0.03)
    assert sliced_wasserstein(a, a.copy()) == pytest.approx(0.0, abs=1e-12)
    assert sliced_wasserstein(a, gauss(20_000, seed=5)) < 0.05
