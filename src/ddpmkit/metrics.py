"""Distances between sample sets, as pure functions on [N, D] arrays or features."""

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
    kxx, kyy, kxy = k(x, x), k(y, y), k(x, y)
    n, m = len(x), len(y)
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
    qx = torch.quantile(x @ theta, levels, dim=0)  # [quantiles, projections]
    qy = torch.quantile(y @ theta, levels, dim=0)
    return float(((qx - qy) ** 2).mean().sqrt())


def frechet_distance(features_a, features_b) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets [N, F] (Heusel et al.
    2017, the distance behind FID): ‖μ_a − μ_b‖² + Tr(Σ_a + Σ_b − 2(Σ_a Σ_b)^½).
    Tr((Σ_a Σ_b)^½) is the sum of √eigenvalues of Σ_a^½ Σ_b Σ_a^½ (symmetric, so stable)."""
    a, b = _as_tensor(features_a), _as_tensor(features_b)
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = torch.cov(a.T).reshape(a.shape[1], a.shape[1]), torch.cov(b.T).reshape(b.shape[1], b.shape[1])
    evals, evecs = torch.linalg.eigh(cov_a)
    sqrt_a = evecs @ torch.diag(evals.clamp(min=0).sqrt()) @ evecs.T
    cross = torch.linalg.eigvalsh(sqrt_a @ cov_b @ sqrt_a).clamp(min=0).sqrt().sum()
    return float(((mu_a - mu_b) ** 2).sum() + cov_a.trace() + cov_b.trace() - 2 * cross)
