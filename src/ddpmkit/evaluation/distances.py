"""How close 2-D samples are to their distribution: MMD² and sliced Wasserstein distance to
fresh points of the same generator (plus precision and recall), in the normalised space the
model sees, so numbers compare across data sets."""

from __future__ import annotations

import numpy as np

from .. import metrics
from ..config import RunConfig
from ..data.toy import FRESH_SEED, fresh_points, normalise
from ..modality import images_only
from ..sampling import Run, SamplingRequest, draw_recorded


def toy_distances(config: RunConfig, points: np.ndarray, seed: int = FRESH_SEED) -> dict[str, float]:
    """MMD² (RBF, median bandwidth) and sliced Wasserstein between data-space samples and as
    many fresh points, both in the normalised space."""
    a, b = (normalise(p, config.data.mean, config.data.scale) for p in (points, fresh_points(config.data, len(points), seed)))
    return {"mmd": metrics.mmd_rbf(a, b), "sliced_wasserstein": metrics.sliced_wasserstein(a, b)}


def point_rows(record: dict) -> tuple[list[str], list[tuple[str, str, str]]]:
    """The header lines and table rows of a 2-D record's printed report (record.format_report)."""
    rows = [("MMD²", f"{record['mmd']:.5f}", "RBF kernel, median bandwidth, unbiased (lower is better, 0 = same law)"),
            ("sliced W2", f"{record['sliced_wasserstein']:.4f}", "sliced 2-Wasserstein distance (lower is better)")]
    return [f"space:     {record['space']}"], rows


class PointMeasures:
    """The measures of 2-D points (what kinds.measures hands out for them): distances to fresh points."""

    def measure(self, run: Run, request: SamplingRequest, num: int, *, features: str = "own", inception_weights=None,
                k: int = 3, ref=None, **_image_only) -> dict:
        """The quality record of `num` samples of a 2-D run drawn as `request` says (see kinds.evaluate_quality)."""
        if features != "own" or inception_weights is not None or ref is not None:
            images_only(run.modality, "--features, --inception-weights or --ref", "its measures are distances to fresh points")
        data, sample_record = draw_recorded(run, num, request)
        fresh = fresh_points(run.config.data, len(data))  # one reference for every seed
        mean, scale = run.config.data.mean, run.config.data.scale
        precision, recall = metrics.precision_recall(normalise(fresh, mean, scale), normalise(data, mean, scale), k=k)
        record = {"kind": "points", "samples": sample_record,
                  "reference": {"data": run.config.data.name, "num_images": len(fresh),
                                "what": f"{len(fresh):,} fresh {run.config.data.name} points (seed {FRESH_SEED}, never trained on)"},
                  "space": "normalised (the space the model sees)",
                  **toy_distances(run.config, data), "precision": precision, "recall": recall, "k": k}
        record["note"] = (f"MMD² is unbiased (0 in expectation for a perfect model); both distances shrink with more points: "
                          f"compare at equal N ({num:,})")
        return record

    def quick_measure(self, run: Run, report=lambda message: None):
        """(what is measured, function data-space samples -> {metric: value}, the metric to plot):
        what compare-samplers plots for a 2-D run."""
        return "distance to fresh points", lambda data: toy_distances(run.config, data), "mmd"

    def training_measure(self, run: Run, report=lambda message: None):
        """(what is measured, function data-space samples -> {metric: value}, the metric that
        decides the best step): what --eval-every measures on a 2-D run. MMD², sliced Wasserstein
        and precision/recall against as many fresh points, in the normalised space."""
        mean, scale = run.config.data.mean, run.config.data.scale

        def measure(data: np.ndarray) -> dict:
            fresh = fresh_points(run.config.data, len(data))
            precision, recall = metrics.precision_recall(normalise(fresh, mean, scale), normalise(data, mean, scale), k=3)
            return {**toy_distances(run.config, data), "precision": precision, "recall": recall}

        return f"fresh {run.config.data.name} points (seed {FRESH_SEED}), normalised space", measure, "mmd"

    def summary(self, config: RunConfig, points: np.ndarray) -> str | None:
        """What `ddpmkit sample` prints after 2-D samples: their distance to as many fresh points."""
        if len(points) < 2:
            return None
        d = toy_distances(config, points)
        return (f"distance to {len(points)} fresh {config.data.name} points: MMD² {d['mmd']:.5f}, "
                f"sliced Wasserstein {d['sliced_wasserstein']:.4f}")

    def end_of_training(self, run: Run, samples) -> dict:
        """What a 2-D run's end-of-training pictures measure for metrics.json: the distance of their samples to fresh points."""
        return toy_distances(run.config, samples.data)
