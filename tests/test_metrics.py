import numpy as np
import pytest

from ddpmkit import metrics
from ddpmkit.metrics import (
    frechet_distance,
    frechet_distance_from_statistics,
    gaussian_statistics,
    kid,
    knn_radii,
    median_bandwidth,
    mmd2_polynomial,
    mmd_rbf,
    near_copies,
    nearest_neighbours,
    precision_recall,
    sliced_wasserstein,
)


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


# ---- Fréchet distance ---------------------------------------------------------------------
def test_frechet_distance_of_a_set_with_itself_is_zero_and_grows_with_a_shift():
    a = np.random.default_rng(0).standard_normal((500, 16))
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-9)
    shifted = [frechet_distance(a, a + s) for s in (0.1, 0.5, 1.0)]
    assert shifted == pytest.approx([16 * s**2 for s in (0.1, 0.5, 1.0)], rel=1e-6)  # a pure shift adds ‖δ‖²
    assert 0 < shifted[0] < shifted[1] < shifted[2]


def test_frechet_distance_of_gaussian_samples_matches_the_closed_form():
    """Features drawn from N(μ₁, Σ₁) and N(μ₂, Σ₂): the estimate approaches
    ‖μ₁ − μ₂‖² + Tr(Σ₁ + Σ₂ − 2(Σ₁Σ₂)^½), here computed independently with scipy's sqrtm."""
    from scipy.linalg import sqrtm

    rng = np.random.default_rng(1)
    d = 4
    l1, l2 = rng.standard_normal((d, d)) * 0.6, rng.standard_normal((d, d)) * 0.6
    cov1, cov2 = l1 @ l1.T + 0.3 * np.eye(d), l2 @ l2.T + 0.3 * np.eye(d)
    mu1, mu2 = rng.standard_normal(d), rng.standard_normal(d)
    exact = np.sum((mu1 - mu2) ** 2) + np.trace(cov1 + cov2 - 2 * sqrtm(cov1 @ cov2).real)
    assert frechet_distance_from_statistics(mu1, cov1, mu2, cov2) == pytest.approx(exact, rel=1e-9)
    a = rng.multivariate_normal(mu1, cov1, 200_000)
    b = rng.multivariate_normal(mu2, cov2, 200_000)
    assert frechet_distance(a, b) == pytest.approx(exact, rel=0.02)
    mu, cov = gaussian_statistics(a)
    assert np.allclose(mu, a.mean(0)) and np.allclose(cov, np.cov(a.T))


def test_frechet_distance_of_diagonal_gaussians():
    """Commuting (diagonal) covariances: Σᵢ (σ₁ᵢ − σ₂ᵢ)² + ‖μ₁ − μ₂‖²."""
    s1, s2 = np.array([1.0, 2.0, 0.5]), np.array([0.5, 2.0, 1.5])
    mu1, mu2 = np.zeros(3), np.array([1.0, 0.0, -2.0])
    expected = np.sum((s1 - s2) ** 2) + 5.0
    assert frechet_distance_from_statistics(mu1, np.diag(s1**2), mu2, np.diag(s2**2)) == pytest.approx(expected, rel=1e-12)


# ---- KID ---------------------------------------------------------------------------------
def _poly_moments(m, s):
    """E[x], E[x²], E[x³] of N(m, s²)."""
    return m, m**2 + s**2, m**3 + 3 * m * s**2


def _cubic_kernel_mean(a, b):
    """E[(xy + 1)³] for independent 1-D x ~ N(a), y ~ N(b) (d = 1): 1 + 3E[xy] + 3E[x²y²] + E[x³y³]."""
    (a1, a2, a3), (b1, b2, b3) = _poly_moments(*a), _poly_moments(*b)
    return 1 + 3 * a1 * b1 + 3 * a2 * b2 + a3 * b3


def test_kid_is_unbiased_on_a_closed_form_case():
    """1-D Gaussians, where MMD² for the cubic kernel has a closed form. With subsets of 5
    the average estimate lands on it within its standard error, while the plug-in
    (biased, diagonal-included) estimate misses by many standard errors."""
    p, q = (0.5, 1.0), (0.0, 0.8)  # (mean, sd)
    exact = _cubic_kernel_mean(p, p) + _cubic_kernel_mean(q, q) - 2 * _cubic_kernel_mean(p, q)
    rng = np.random.default_rng(2)
    estimates, plug_in = [], []
    for _ in range(4000):
        x, y = rng.normal(*p, (5, 1)), rng.normal(*q, (5, 1))
        estimates.append(mmd2_polynomial(x, y))
        k = lambda a, b: (a @ b.T + 1) ** 3  # noqa: E731
        plug_in.append(k(x, x).mean() + k(y, y).mean() - 2 * k(x, y).mean())
    mean, stderr = np.mean(estimates), np.std(estimates) / np.sqrt(len(estimates))
    assert abs(mean - exact) < 3 * stderr, (mean, exact, stderr)
    assert abs(np.mean(plug_in) - exact) > 10 * stderr


def test_kid_of_the_same_law_is_zero_within_its_spread_and_grows_with_a_shift(monkeypatch):
    rng = np.random.default_rng(3)
    a, b = rng.standard_normal((2000, 8)), rng.standard_normal((2000, 8))
    mean, std = kid(a, b, subset_size=500, num_subsets=50)
    assert abs(mean) < std  # (the subsets share the 2,000 points, so their mean is not 50× surer)
    assert kid(a, a + 0.5, subset_size=500, num_subsets=10)[0] > 20 * std
    assert kid(a, b, subset_size=500, num_subsets=10, seed=1) == kid(a, b, subset_size=500, num_subsets=10, seed=1)

    # the whole-matrix shortcut gives the per-subset numbers
    small = kid(a[:300], b[:300], subset_size=100, num_subsets=5, seed=2)
    monkeypatch.setattr(metrics, "KERNEL_CACHE_ENTRIES", 0)
    assert kid(a[:300], b[:300], subset_size=100, num_subsets=5, seed=2) == pytest.approx(small, rel=1e-9)


# ---- precision and recall ----------------------------------------------------------------
def test_precision_and_recall_are_one_for_identical_sets_and_fall_for_disjoint_ones():
    a = np.random.default_rng(4).standard_normal((300, 5))
    assert precision_recall(a, a.copy()) == (1.0, 1.0)
    assert precision_recall(a, a + 100.0) == (0.0, 0.0)
    # half the fake set sits on the data, half far away: precision 1/2; its good half covers the real set
    half = np.concatenate([a[:150], a[150:] + 100.0])
    precision, recall = precision_recall(a, half)
    assert precision == pytest.approx(0.5) and 0.4 < recall < 1.0
    # a fake set that collapsed onto one mode keeps precision, loses recall
    mode = a[a[:, 0] > 1.5]  # 26 of the 300 points, on one side
    precision, recall = precision_recall(a, mode)
    assert precision == 1.0 and recall < 0.5


def test_knn_radius_counts_other_points_only():
    x = np.array([[0.0], [1.0], [3.0], [6.0], [10.0]])
    assert knn_radii(x, k=1).tolist() == [1.0, 1.0, 2.0, 3.0, 4.0]
    assert knn_radii(x, k=3).tolist() == [6.0, 5.0, 3.0, 5.0, 9.0]
    with pytest.raises(ValueError, match="more than k"):
        knn_radii(x[:3], k=3)


# ---- memorisation ------------------------------------------------------------------------
def test_nearest_neighbours_with_leave_one_out():
    ref = np.array([[0.0, 0.0], [3.0, 4.0], [10.0, 0.0]])
    d, i = nearest_neighbours(ref, ref)
    assert d.tolist() == [0.0, 0.0, 0.0] and i.tolist() == [0, 1, 2]
    d, i = nearest_neighbours(ref, ref, exclude=np.array([0, 1, -1]))
    assert d.tolist() == [5.0, 5.0, 0.0] and i.tolist() == [1, 0, 2]


def test_memorisation_check_flags_exact_copies_of_training_images():
    """Training, held-out and fresh images are disjoint parts of the digits; a sample set
    mixing 40 copies of training images (some with ±1 grey-level noise) into fresh
    real images has every copy flagged and few fresh images."""
    from sklearn.datasets import load_digits

    images = load_digits().images.reshape(-1, 64) / 16.0
    rng = np.random.default_rng(5)
    order = rng.permutation(len(images))
    train, heldout, fresh = images[order[:1200]], images[order[1200:1500]], images[order[1500:]]
    copies = train[rng.choice(len(train), 40, replace=False)]
    copies[20:] = np.clip(copies[20:] + rng.choice([-1, 0, 1], copies[20:].shape) / 255, 0, 1)
    samples = np.concatenate([copies, fresh])
    result = near_copies(nearest_neighbours(samples, train)[0], nearest_neighbours(heldout, train)[0])
    assert result["flags"][:40].all()
    assert result["flags"][40:].mean() < 0.05
    assert result["fraction"] == pytest.approx((40 + result["flags"][40:].sum()) / len(samples))
    assert result["threshold"] > 0.05  # a real threshold, not a test for exact equality
    fresh_only = near_copies(nearest_neighbours(fresh, train)[0], nearest_neighbours(heldout, train)[0])
    assert 0.7 < fresh_only["median_ratio"] < 1.3  # new images sit as far from the training set as held-out ones
