"""Which measures apply to a run's kind of data: ImageMeasures (quality.py) for images,
PointMeasures (distances.py) for 2-D points, each with the same methods (measure, quick_measure,
training_measure, summary, end_of_training). `measures(kind)` is the one place that picks them,
by the kind's name."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from ..features import OwnTraining
from ..modality import Kind
from ..errors import UserError
from ..sampling import BALANCED, Run, SamplingRequest
from .distances import PointMeasures
from .quality import ImageMeasures

MEASURES = {"points": PointMeasures(), "images": ImageMeasures()}  # by Kind.kind


@dataclass(frozen=True)
class QualitySettings:
    """How `ddpmkit evaluate` measures sample quality, besides how the samples are drawn."""

    num: int = 2000  # samples drawn and measured
    features: str = "own"  # images: own (ddpmkit's features for this data) or inception (FID's network)
    inception_weights: Path | None = None  # --features inception: the weights file (never downloaded)
    ref: Path | None = None  # images: a reference .npz (mu, sigma) the Fréchet distance is measured against
    training: OwnTraining = field(default_factory=OwnTraining)  # how the own features are trained on first use
    kid_subsets: int = 100  # images: subsets KID is averaged over


def measures(kind: Kind) -> PointMeasures | ImageMeasures:
    """The measures of a kind of data."""
    return MEASURES[kind.kind]


def evaluate_quality(run: Run, request: SamplingRequest = SamplingRequest(), settings: QualitySettings = QualitySettings(),
                     *, k: int = 3, out: Path | None = None, report=lambda m: None) -> dict:
    """Draw `settings.num` samples as `request` says, balanced over the run's classes where it has
    any (or its classifier's under classifier guidance), and measure them as the run's kind is
    measured (`settings`: the features, the reference; pictures go to `out`, default RUN/eval).
    Returns the record; record.write_quality_record stores it."""
    num = settings.num
    if num <= k:
        raise UserError(f"--num-samples must be more than {k} (precision and recall use the {k}-th nearest neighbour), "
                        f"got {num}")
    if request.classes not in (None, BALANCED):
        raise UserError("evaluate measures samples balanced over the run's classes; drop --class")
    request = dataclasses.replace(request, classes=BALANCED).resolve(run)
    return measures(run.modality).measure(run, request, num, features=settings.features, k=k, out=out, report=report,
                                          inception_weights=settings.inception_weights, training=settings.training,
                                          kid_subsets=settings.kid_subsets,
                                          ref=None if settings.ref is None else Path(settings.ref))
