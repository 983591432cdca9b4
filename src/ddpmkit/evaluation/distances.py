"""How close 2-D samples are to their distribution: MMD² and sliced Wasserstein distance to
fresh points of the same generator (plus precision and recall), in the normalised space the
model sees, so numbers compare across data sets."""

from __future__ import annotations

import numpy as np

from .. import metrics
from ..config import RunConfig
from ..data.toy import normalise, toy_points
from ..errors import UserError
from ..sampling import Run, SampleSettings, draw_recorded

FRESH_SEED = 10_000_019  # toy data for metrics is drawn with a seed no training run uses by default


def fresh_points(config: RunConfig, n: int, seed: int = FRESH_SEED) -> np.ndarray:
    """n new points [n, D] of a run's toy distribution, in data space."""
    return toy_points(config.data.name, n, seed=seed, noise=config.data.toy_noise)[0]


def toy_distances(config: RunConfig, points: np.ndarray, seed: int = FRESH_SEED) -> dict[str, float]:
    """MMD² (RBF, median bandwidth) and sliced Wasserstein between data-space samples and as
    many fresh points, both in the normalised space."""
    a, b = (normalise(p, config.data.mean, config.data.scale) for p in (points, fresh_points(config, len(points), seed)))
    return {"mmd": metrics.mmd_rbf(a, b), "sliced_wasserstein": metrics.sliced_wasserstein(a, b)}


def point_quality(run: Run, settings: SampleSettings, *, features: str = "own", inception_weights=None, k: int = 3,
                  **_image_only) -> dict:
    """The quality record of a 2-D run (checked settings; see quality.evaluate_quality)."""
    if features != "own" or inception_weights is not None or "ref" in _image_only:
        raise UserError(f"--features, --inception-weights and --ref apply to image runs; {run.config.data.name} is 2-D data")
    data, sample_record = draw_recorded(run, settings)
    fresh = fresh_points(run.config, len(data))  # one reference for every seed
    mean, scale = run.config.data.mean, run.config.data.scale
    precision, recall = metrics.precision_recall(normalise(fresh, mean, scale), normalise(data, mean, scale), k=k)
    record = {"kind": "points", "samples": sample_record,
              "reference": {"data": run.config.data.name, "num_images": len(fresh),
                            "what": f"{len(fresh):,} fresh {run.config.data.name} points (seed {FRESH_SEED}, never trained on)"},
              "space": "normalised (the space the model sees)",
              **toy_distances(run.config, data), "precision": precision, "recall": recall, "k": k}
    record["note"] = (f"MMD² is unbiased (0 in expectation for a perfect model); both distances shrink with more points: "
                      f"compare at equal N ({settings.num:,})")
    return record


def quick_measure(run: Run, report=lambda message: None):
    """(what is measured, function data-space samples -> {metric: value}, the metric to plot):
    what compare-samplers plots for a 2-D run."""
    return "distance to fresh points", lambda data: toy_distances(run.config, data), "mmd"


def training_measure(run: Run, report=lambda message: None):
    """(what is measured, function data-space samples -> {metric: value}, the metric that
    decides the best step): what --eval-every measures on a 2-D run. MMD², sliced Wasserstein
    and precision/recall against as many fresh points, in the normalised space."""
    mean, scale = run.config.data.mean, run.config.data.scale

    def measure(data: np.ndarray) -> dict:
        fresh = fresh_points(run.config, len(data))
        precision, recall = metrics.precision_recall(normalise(fresh, mean, scale), normalise(data, mean, scale), k=3)
        return {**toy_distances(run.config, data), "precision": precision, "recall": recall}

    return f"fresh {run.config.data.name} points (seed {FRESH_SEED}), normalised space", measure, "mmd"


def point_rows(record: dict) -> tuple[list[str], list[tuple[str, str, str]]]:
    """The header lines and table rows of a 2-D record's printed report (record.format_report)."""
    rows = [("MMD²", f"{record['mmd']:.5f}", "RBF kernel, median bandwidth, unbiased (lower is better, 0 = same law)"),
            ("sliced W2", f"{record['sliced_wasserstein']:.4f}", "sliced 2-Wasserstein distance (lower is better)")]
    return [f"space:     {record['space']}"], rows
