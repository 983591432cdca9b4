"""2-D toy distributions, drawn fresh from a seed (scikit-learn's generators where it has them)."""

from __future__ import annotations

import numpy as np
import torch

from ..errors import UserError

TOY_DATASETS: tuple[str, ...] = ("moons", "swiss-roll", "s-curve", "circles", "checkerboard", "8gaussians")
# How many classes the toy sets with natural classes have (moons' two halves, the 8 modes).
FRESH_SEED = 10_000_019  # fresh points to measure against are drawn with a seed no training run uses by default
TOY_CLASSES: dict[str, int] = {"moons": 2, "circles": 2, "8gaussians": 8}
# The noise σ of each generator when none is asked for (--toy-noise): scikit-learn's `noise` of
# moons, circles, swiss roll and s-curve; the Gaussian jitter of the checkerboard's uniform
# squares; the standard deviation of each of the 8 Gaussians.
TOY_NOISE: dict[str, float] = {"moons": 0.05, "circles": 0.04, "swiss-roll": 0.4, "s-curve": 0.05, "checkerboard": 0.0,
                               "8gaussians": 0.1}


def canonical_toy_name(name: str) -> str | None:
    """The toy name for `name` (accepting _ for -), or None if it is not a toy set."""
    key = name.lower().replace("_", "-")
    return key if key in TOY_DATASETS else None


def toy_points(name: str, n: int, seed: int, noise: float | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """n points [n, 2] float32 in data space, and labels [n] where the set has classes;
    `noise`: the generator's noise σ (TOY_NOISE; None: the set's own)."""
    key = canonical_toy_name(name)
    if key is None:
        raise UserError(f"unknown toy dataset {name!r}; choose one of: {', '.join(TOY_DATASETS)}")
    if n <= 0:
        raise UserError(f"the number of toy points must be positive, got {n}")
    sigma = TOY_NOISE[key] if noise is None else float(noise)
    if not (np.isfinite(sigma) and sigma >= 0):
        raise UserError(f"--toy-noise must be a finite number ≥ 0 (the generator's noise σ), got {noise}")
    from sklearn import datasets as skd  # here, not at the top: it takes seconds to import, and every CLI command imports this module

    rng = np.random.default_rng(seed)
    labels = None
    if key == "moons":
        x, labels = skd.make_moons(n, noise=sigma, random_state=seed)
    elif key == "circles":
        x, labels = skd.make_circles(n, noise=sigma, factor=0.5, random_state=seed)
    elif key == "swiss-roll":
        x = skd.make_swiss_roll(n, noise=sigma, random_state=seed)[0][:, [0, 2]]
    elif key == "s-curve":
        x = skd.make_s_curve(n, noise=sigma, random_state=seed)[0][:, [0, 2]]
    elif key == "checkerboard":
        # 8 filled squares of a 4x4 board on [-2, 2]^2: columns of alternating parity.
        col = rng.integers(0, 4, n)
        row = 2 * rng.integers(0, 2, n) + (col % 2)
        x = np.stack([col + rng.random(n), row + rng.random(n)], 1) - 2.0
        if sigma:
            x = x + sigma * rng.standard_normal((n, 2))
    else:  # 8gaussians: modes evenly on a circle of radius 2, std 0.1
        labels = rng.integers(0, 8, n)
        angle = labels * (2 * np.pi / 8)
        x = 2.0 * np.stack([np.cos(angle), np.sin(angle)], 1) + sigma * rng.standard_normal((n, 2))
    return x.astype(np.float32), None if labels is None else labels.astype(np.int64)


def fresh_points(data, n: int, seed: int = FRESH_SEED) -> np.ndarray:
    """n new points [n, D] of a run's toy distribution (`data`: its DataConfig), in data space:
    what its samples are measured against and drawn over."""
    return toy_points(data.name, n, seed=seed, noise=data.toy_noise)[0]


def normalise(points: np.ndarray, mean, scale: float) -> np.ndarray:
    """Data space → the space the model sees: (x − mean) / scale."""
    return (points - np.asarray(mean, dtype=np.float32)) / scale


def denormalise(x: torch.Tensor | np.ndarray, mean, scale: float) -> np.ndarray:
    """The space the model sees → data space: x · scale + mean (a numpy array)."""
    x = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    return x * scale + np.asarray(mean, dtype=np.float32)


class PointDataset(torch.utils.data.Dataset):
    """Toy points normalised to zero mean and unit overall scale (one scale for both
    axes, so shapes are not distorted): model space = (x - mean) / scale."""

    def __init__(self, points: np.ndarray, labels: np.ndarray | None, mean: np.ndarray, scale: float):
        self.mean = np.asarray(mean, dtype=np.float32)
        self.scale = float(scale)
        self.points = torch.from_numpy(normalise(points, self.mean, self.scale)).float()
        self.labels = None if labels is None else torch.from_numpy(labels).long()
        self.num_classes = 0 if labels is None else int(labels.max()) + 1

    def __len__(self) -> int:
        return len(self.points)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.points[i], -1 if self.labels is None else int(self.labels[i])

    def __getitems__(self, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        idx = torch.as_tensor(indices)
        labels = torch.full((len(idx),), -1, dtype=torch.long) if self.labels is None else self.labels[idx]
        return self.points[idx], labels


def normalisation(points: np.ndarray) -> tuple[np.ndarray, float]:
    """Per-axis mean and one overall scale (RMS distance per axis) of a point set."""
    mean = points.mean(0)
    return mean, float(np.sqrt(((points - mean) ** 2).mean()))
