"""Distances between sample sets, as pure functions on [N, D] arrays or features.

Nothing here knows about images or networks: feature extractors live in features.py.
Distances and statistics are computed in float64.
"""

from __future__ import annotations

import numpy as np
import torch


def _as_tensor(x) -> torch.Tensor:
    return torch.as_tensor(np.asarray(x), dtype=torch.float64).flatten(1)


def median_bandwidth(x, y, max_points: int = 2000) -> float:
    """The median-heuristic RBF bandwidth σ: the median pairwise distance of the pooled
    points (Gretton et al. 2012), on at most `max_points` of them."""
    pooled = torch.cat([_as_tensor(x), _as_tensor(y)])[:max_points]
    d = torch.cdist(pooled, pooled)
    return float(d[torch.triu_indices(len(pooled), len(pooled), 1).unbind()].median())


def mmd_rbf(x, y, bandwidth: float | None = None) -> float:
    """Unbiased estimate of the squared maximum mean discrepancy MMD²(P, Q) with the
    kernel k(a, b) = exp(-‖a-b‖² / (2σ²)) (Eq. 3 of Gretton et al. 2012).
    σ defaults to the median heuristic. 0 in expectation when P = Q; may dip below 0."""
    x, y = _as_tensor(x), _as_tensor(y)
    sigma = median_bandwidth(x, y) if bandwidth is None else bandwidth
    k = lambda a, b: torch.exp(-torch.cdist(a, b) ** 2 / (2 * sigma**2))  # noqa: E731
    return _unbiased_mmd2(k(x, x), k(y, y), k(x, y))


def _unbiased_mmd2(kxx: torch.Tensor, kyy: torch.Tensor, kxy: torch.Tensor) -> float:
    """The unbiased MMD² from kernel matrices (Eq. 3 of Gretton et al. 2012): diagonals left
    out of the within-set means; every cross pair is independent, so the cross mean keeps all."""
    n, m = len(kxx), len(kyy)
    return float(
        (kxx.sum() - kxx.diagonal().sum()) / (n * (n - 1))
        + (kyy.sum() - kyy.diagonal().sum()) / (m * (m - 1))
        - 2 * kxy.mean()
    )


def sliced_wasserstein(x, y, num_projections: int = 256, seed: int = 0, quantiles: int = 1000) -> float:
    """Sliced 2-Wasserstein distance (Bonneel et al. 2015): √(mean over random unit
    directions θ of W₂²(θᵀP, θᵀQ)), each 1-D W₂ from quantile functions on a shared grid."""
    x, y = _as_tensor(x), _as_tensor(y)
    g = torch.Generator().manual_seed(seed)
    theta = torch.randn(x.shape[1], num_projections, generator=g, dtype=torch.float64)
    theta /= theta.norm(dim=0, keepdim=True)
    levels = (torch.arange(quantiles, dtype=torch.float64) + 0.5) / quantiles
    # Each projection's values contiguous ([projections, N]): quantile's sort runs 2-3x faster along the last dimension.
    qx = torch.quantile((x @ theta).T.contiguous(), levels, dim=1)  # [quantiles, projections]
    qy = torch.quantile((y @ theta).T.contiguous(), levels, dim=1)
    return float(((qx - qy) ** 2).mean().sqrt())


def gaussian_statistics(features) -> tuple[torch.Tensor, torch.Tensor]:
    """(μ [F], Σ [F, F]) of features [N, F], Σ with the 1/(N−1) normalisation, in float64."""
    a = _as_tensor(features)
    return a.mean(0), torch.cov(a.T).reshape(a.shape[1], a.shape[1])


def frechet_distance_from_statistics(mu_a, cov_a, mu_b, cov_b) -> float:
    """Fréchet (2-Wasserstein) distance between N(μ_a, Σ_a) and N(μ_b, Σ_b), the distance
    behind FID (Heusel et al. 2017): ‖μ_a − μ_b‖² + Tr(Σ_a + Σ_b − 2(Σ_a Σ_b)^½).
    Tr((Σ_a Σ_b)^½) is the sum of √eigenvalues of Σ_a^½ Σ_b Σ_a^½ (symmetric, so stable)."""
    mu_a, mu_b, cov_a, cov_b = (torch.as_tensor(np.asarray(v), dtype=torch.float64) for v in (mu_a, mu_b, cov_a, cov_b))
    evals, evecs = torch.linalg.eigh(cov_a)
    sqrt_a = evecs @ torch.diag(evals.clamp(min=0).sqrt()) @ evecs.T
    middle = sqrt_a @ cov_b @ sqrt_a
    cross = torch.linalg.eigvalsh((middle + middle.T) / 2).clamp(min=0).sqrt().sum()
    return float(((mu_a - mu_b) ** 2).sum() + cov_a.trace() + cov_b.trace() - 2 * cross)


def frechet_distance(features_a, features_b) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets [N, F]: FID when the
    features are Inception-v3 pool features (see frechet_distance_from_statistics)."""
    return frechet_distance_from_statistics(*gaussian_statistics(features_a), *gaussian_statistics(features_b))


# ---- kernel inception distance -------------------------------------------------------------
def _cubic_kernel(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """k(a, b) = (aᵀb / d + 1)³, d the feature dimension: the kernel of KID."""
    return (a @ b.T / a.shape[1] + 1) ** 3


def mmd2_polynomial(x, y) -> float:
    """Unbiased MMD² with the cubic polynomial kernel (aᵀb / d + 1)³ (Bińkowski et al. 2018)."""
    x, y = _as_tensor(x), _as_tensor(y)
    return _unbiased_mmd2(_cubic_kernel(x, x), _cubic_kernel(y, y), _cubic_kernel(x, y))


KERNEL_CACHE_ENTRIES = 25_000_000  # KID computes whole kernel matrices once when each has at most this many


def kid(features_a, features_b, subset_size: int = 1000, num_subsets: int = 100, seed: int = 0) -> tuple[float, float]:
    """Kernel Inception Distance (Bińkowski et al. 2018): the unbiased cubic-kernel MMD² on
    `num_subsets` pairs of random subsets of `subset_size` (capped by both set sizes) drawn
    without replacement; returns (mean, standard deviation over the subsets). Unbiased for any
    subset size, unlike FID. The kernel matrices of the whole sets are computed once when
    they are small enough, and each subset reads its block from them."""
    a, b = _as_tensor(features_a), _as_tensor(features_b)
    m = min(subset_size, len(a), len(b))
    if m < 2:
        raise ValueError(f"KID needs at least 2 features in each set, got {len(a)} and {len(b)}")
    whole = max(len(a), len(b)) ** 2 <= KERNEL_CACHE_ENTRIES
    if whole:
        kaa, kbb, kab = _cubic_kernel(a, a), _cubic_kernel(b, b), _cubic_kernel(a, b)
    g = torch.Generator().manual_seed(seed)
    values = []
    for _ in range(num_subsets):
        i, j = torch.randperm(len(a), generator=g)[:m], torch.randperm(len(b), generator=g)[:m]
        if whole:
            values.append(_unbiased_mmd2(kaa[i][:, i], kbb[j][:, j], kab[i][:, j]))
        else:
            values.append(mmd2_polynomial(a[i], b[j]))
    values = torch.tensor(values, dtype=torch.float64)
    return float(values.mean()), float(values.std()) if num_subsets > 1 else 0.0


# ---- nearest neighbours: precision / recall, memorisation --------------------------------
def _squared_distances(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """‖a_i − b_j‖² [len(a), len(b)] in float64 through ‖a‖² + ‖b‖² − 2aᵀb; what is left of
    that cancellation below 1e-12 of ‖a‖² + ‖b‖² is rounding, set to 0 (identical rows are at 0)."""
    norms = (a * a).sum(1, keepdim=True) + (b * b).sum(1)
    d = norms - 2 * a @ b.T
    return torch.where(d <= 1e-12 * norms, torch.zeros_like(d), d)


def nearest_neighbours(queries, reference, exclude=None, chunk: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """For each query row, the Euclidean distance to its nearest reference row and that
    row's index. `exclude` [Q] (optional): a reference index each query must skip (itself,
    for leave-one-out distances; −1 for none)."""
    q, r = _as_tensor(queries), _as_tensor(reference)
    dist, index = [], []
    for start in range(0, len(q), chunk):
        d = _squared_distances(q[start : start + chunk], r)
        if exclude is not None:
            skip = torch.as_tensor(np.asarray(exclude[start : start + chunk]), dtype=torch.long)
            rows = torch.nonzero(skip >= 0).flatten()
            d[rows, skip[rows]] = float("inf")
        best = d.min(1)
        dist.append(best.values.sqrt())
        index.append(best.indices)
    return torch.cat(dist).numpy(), torch.cat(index).numpy()


def knn_radii(features, k: int = 3, chunk: int = 1024) -> np.ndarray:
    """Distance from each row to its k-th nearest other row: the radius of its ball in the
    k-NN manifold estimate of Kynkäänniemi et al. 2019."""
    x = _as_tensor(features)
    if len(x) <= k:
        raise ValueError(f"the k-NN manifold needs more than k = {k} points, got {len(x)}")
    radii = [
        _squared_distances(x[s : s + chunk], x).kthvalue(k + 1, dim=1).values.sqrt()  # the (k+1)-th counts the row itself
        for s in range(0, len(x), chunk)
    ]
    return torch.cat(radii).numpy()


def _inside_manifold(points: torch.Tensor, centres: torch.Tensor, radii: torch.Tensor, chunk: int = 1024) -> torch.Tensor:
    """Whether each point lies in at least one ball ‖point − centre‖ ≤ radius."""
    inside = [(_squared_distances(points[s : s + chunk], centres) <= radii**2).any(1) for s in range(0, len(points), chunk)]
    return torch.cat(inside)


def precision_recall(real_features, fake_features, k: int = 3) -> tuple[float, float]:
    """Improved precision and recall (Kynkäänniemi et al. 2019, Eq. 1-3): each set's manifold
    is the union of balls around its points reaching their k-th nearest neighbour.
    Precision: the fraction of fake points inside the real manifold (fidelity); recall: the
    fraction of real points inside the fake manifold (coverage of the data)."""
    real, fake = _as_tensor(real_features), _as_tensor(fake_features)
    real_radii = torch.from_numpy(knn_radii(real, k))
    fake_radii = torch.from_numpy(knn_radii(fake, k))
    precision = _inside_manifold(fake, real, real_radii).double().mean()
    recall = _inside_manifold(real, fake, fake_radii).double().mean()
    return float(precision), float(recall)


def near_copies(sample_distances, heldout_distances, quantile: float = 0.01) -> dict:
    """Memorisation check on nearest-training-image distances.

    `sample_distances` [N]: each sample's distance to its nearest training image;
    `heldout_distances` [M]: the same distance for real images the model did not train on
    (or left out of the reference set in turn). A sample is a near-copy when it is at
    most the `quantile` (default 1 %) of the held-out distances from a training image: closer
    than 99 % of genuinely new images from the data distribution come. The rule needs no
    pixel threshold set by hand (it is calibrated on the data, at its resolution) and has a
    known false-positive rate: a model that makes new images flags about `quantile` of them;
    a fraction well above that means copying. (The ratio tests of the literature, nearest
    against second-nearest or against the mean of the 50 nearest (Carlini et al. 2023),
    also fire in dense regions of the data, where new images are close to many others.)
    Also returns the median distance ratio, samples over held-out: below 1 the samples sit
    closer to the training set than new data does (the data-copying signal of Meehan et al. 2020).
    """
    s = np.asarray(sample_distances, dtype=np.float64)
    h = np.asarray(heldout_distances, dtype=np.float64)
    if len(h) == 0 or len(s) == 0:
        raise ValueError("the memorisation check needs samples and held-out distances")
    threshold = float(np.quantile(h, quantile))
    flags = s <= threshold
    return {
        "threshold": threshold,
        "quantile": quantile,
        "flags": flags,
        "fraction": float(flags.mean()),
        "median_ratio": float(np.median(s) / np.median(h)) if np.median(h) > 0 else float("nan"),
    }
