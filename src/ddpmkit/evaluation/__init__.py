"""Measuring a run: sample quality (quality.py for images, distances.py for 2-D points, chosen
for a run's kind by kinds.py),
the reference it is measured against and its caches (reference.py), the memorisation check
(memorisation.py), likelihoods (nll.py), the sampler comparison (compare.py), the post-hoc
EMA sweep (posthoc.py), and
metrics.json with the printed report (record.py, the file's one writer)."""

from .compare import compare_samplers
from .distances import toy_distances
from .kinds import QualitySettings, evaluate_quality, measures
from .memorisation import memorisation
from .nll import evaluate_nll, record_nll
from .posthoc import sweep_and_keep, sweep_ema
from .quality import feature_scores, quick_scores
from .record import format_report, read_metrics, write_metrics, write_quality_record
from .reference import (
    cache_dir,
    dataset_fingerprint,
    image_reference,
    own_features,
    real_statistics,
    is_reference_file,
    write_reference,
)

__all__ = [
    "QualitySettings", "cache_dir", "compare_samplers", "dataset_fingerprint", "evaluate_nll", "evaluate_quality",
    "feature_scores", "format_report", "image_reference", "measures", "memorisation", "own_features", "quick_scores",
    "read_metrics", "real_statistics", "record_nll", "sweep_and_keep", "sweep_ema", "toy_distances", "write_metrics",
    "write_quality_record", "write_reference", "is_reference_file",
]
