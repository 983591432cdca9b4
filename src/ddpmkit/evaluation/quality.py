"""Sample quality of a run, with everything that makes a number comparable beside it.

The measures of an image run (kinds.py picks them for the run's kind; distances.py holds those of
2-D points, under the same names): `measure` draws samples as a sampling request says and
records the Fréchet distance (FID with Inception features) and KID to the run's data, improved
precision and recall, and a memorisation check with a picture of the closest pairs. Each result
is one record (a dict) naming the sample count and the request as resolved (sampler, steps,
network evaluations and passes, seed, weights, guidance), the feature extractor and its weight
hash, the preprocessing and the reference set; record.py stores it in metrics.json and formats
the short table the CLI prints.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .. import metrics, pictures
from ..features import OwnFeatures, OwnTraining
from ..sampling import Run, SamplingRequest, draw_recorded
from .memorisation import memorisation
from .reference import REFERENCE_SEED, ImageReference, feature_pass, image_reference

PAPER_SAMPLES = 50_000  # the sample count of published FIDs


def nhwc_to_nchw(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).contiguous()


def feature_scores(reference: ImageReference, sample_features: np.ndarray, *, k: int = 3, kid_subset: int = 1000,
                   kid_subsets: int = 100, seed: int = 0) -> dict:
    """Fréchet distance, KID and precision/recall of sample features against the reference."""
    stats = reference.stats
    real = stats.features
    mu, sigma = metrics.gaussian_statistics(sample_features)
    scores = {"frechet_distance": metrics.frechet_distance_from_statistics(mu, sigma, stats.mu, stats.sigma)}
    m = min(kid_subset, len(sample_features), len(real))
    kid_mean, kid_std = metrics.kid(sample_features, real, subset_size=m, num_subsets=kid_subsets, seed=seed)
    scores["kid"] = {"mean": kid_mean, "std": kid_std, "subset_size": m, "subsets": kid_subsets,
                     "kernel": "(xᵀy/d + 1)³, unbiased MMD²"}
    n = min(len(real), len(sample_features))  # equal set sizes, as Kynkäänniemi et al. measure
    real_pr = real[np.sort(np.random.default_rng(REFERENCE_SEED).permutation(len(real))[:n])]
    fake_pr = sample_features[np.sort(np.random.default_rng(seed).permutation(len(sample_features))[:n])]
    precision, recall = metrics.precision_recall(real_pr, fake_pr, k=k)
    scores.update(precision=precision, recall=recall, k=k, precision_recall_set_size=n)
    return scores


def class_scores(extractor: OwnFeatures, images: torch.Tensor) -> dict:
    """Mean top-class confidence of the own classifier and the entropy (nats) of its predicted-
    class histogram (log K when every class is drawn equally often)."""
    probs = extractor.predict_proba(images)
    hist = np.bincount(probs.argmax(1), minlength=probs.shape[1]) / len(probs)
    return {"confidence": float(probs.max(1).mean()), "class_entropy": float(-(hist[hist > 0] * np.log(hist[hist > 0])).sum())}


def quick_scores(reference: ImageReference, samples_nhwc: np.ndarray) -> dict:
    """The Fréchet distance of uint8 samples [N, H, W, C] to the reference (and, with a
    classifier, its confidence and class entropy): the cheap measure compare-samplers uses."""
    images = nhwc_to_nchw(samples_nhwc)
    mu, sigma = metrics.gaussian_statistics(reference.extractor.features(images))
    scores = {"frechet_distance": metrics.frechet_distance_from_statistics(mu, sigma, reference.stats.mu, reference.stats.sigma),
              "num_samples": len(images)}
    if isinstance(reference.extractor, OwnFeatures) and reference.extractor.is_classifier:
        scores.update(class_scores(reference.extractor, images))
    return scores


def image_note(record: dict) -> str:
    n = record["samples"]["num"]
    name = "FID" if record["features"]["name"].startswith("inception") else f"the Fréchet distance in {record['features']['name']} features"
    text = f"{name} is biased upward at small N: compare only numbers with the same N ({n:,}), features and reference"
    if n < PAPER_SAMPLES and name == "FID":
        text += f"; papers use {PAPER_SAMPLES:,} samples, so this is not comparable with their FIDs"
    if name != "FID":
        text += "; it is not FID and not comparable with any published FID"
    return text


def image_rows(record: dict) -> tuple[list[str], list[tuple[str, str, str]]]:
    """The header lines and table rows of an image record's printed report (record.format_report)."""
    f = record["features"]
    fid = "FID" if f["name"].startswith("inception") else "FD"
    kid = record["kid"]
    rows = [(fid, f"{record['frechet_distance']:.4f}", f"Fréchet distance in {f['name']} features (lower is better)"),
            ("KID", f"{kid['mean']:.5f} ± {kid['std']:.5f}",
             f"kernel distance, mean ± sd over {kid['subsets']} subsets of {kid['subset_size']:,} (unbiased)")]
    return [f"features:  {f['description']}", f"           fed as {f['preprocessing']}"], rows


def image_extra_rows(record: dict) -> list[tuple[str, str, str]]:
    """The rows after precision and recall: near-copies and the classifier's classes."""
    m = record["memorisation"]
    rows = [("near-copies", f"{100 * m['near_copy_fraction']:.1f}%",
             f"samples nearer a training image than {100 * (1 - m['expected_without_copying']):.0f}% of left-out real images "
             f"(≈{100 * m['expected_without_copying']:.0f}% without copying)")]
    if "class_entropy" in record:
        rows.append(("classes", f"{record['class_entropy']:.3f} nats",
                     f"entropy of the classifier's predicted classes (mean confidence {record['confidence']:.3f})"))
    return rows


class ImageMeasures:
    """The measures of images (what kinds.measures hands out for them): feature statistics against the run's data."""

    def measure(self, run: Run, request: SamplingRequest, num: int, *, features: str = "own", inception_weights=None, k: int = 3,
                kid_subset: int = 1000, kid_subsets: int = 100, training: OwnTraining = OwnTraining(),
                out: Path | None = None, report=lambda m: None, ref: Path | None = None) -> dict:
        """The quality record of `num` samples of an image run drawn as `request` says (see
        kinds.evaluate_quality); `ref`: a reference .npz for the Fréchet distance
        (reference.with_reference_file); the closest pairs' picture goes to `out` (default RUN/eval)."""
        reference = image_reference(run, features, inception_weights, report, training, ref, progress=request.progress)
        r = request.resolve(run)
        report(f"drawing {num:,} samples with {r.sampler}, {r.steps} steps")
        data, sample_record = draw_recorded(run, num, r)
        images = nhwc_to_nchw(data)
        record = {"kind": "images", "samples": sample_record, "features": {**reference.extractor.identity(),
                  "description": reference.extractor.description}, "reference": reference.description}
        sample_features = feature_pass(reference.extractor, images, "the samples", r.progress)
        record.update(feature_scores(reference, sample_features, k=k, kid_subset=kid_subset,
                                     kid_subsets=kid_subsets, seed=r.seed))
        memo = memorisation(reference, images)
        out = Path(out) if out is not None else Path(run.directory) / "eval"
        pictures.closest_pairs(reference.dataset, data, memo, out / "closest_pairs.png")
        record["memorisation"] = {
            "near_copy_fraction": memo["fraction"], "expected_without_copying": memo["quantile"],
            "threshold_rms": memo["threshold"], "median_ratio": memo["median_ratio"],
            "space": f"pixels in [0, 1] ({memo['dim']:,} values per image), RMS distance",
            "searched": f"all {memo['searched_images']:,} training images",
            "calibration": f"{memo['calibration_images']:,} real images, each against all the other training images (leave-one-out)",
            "picture": str(out / "closest_pairs.png"),
        }
        if isinstance(reference.extractor, OwnFeatures) and reference.extractor.is_classifier:
            record.update(class_scores(reference.extractor, images))
        record["note"] = image_note(record)
        return record

    def quick_measure(self, run: Run, report=lambda message: None):
        """(what is measured, function data-space samples -> {metric: value}, the metric to plot):
        the Fréchet distance in the run's own features (trained on its data on first use, saved
        in RUN/features/) to the whole data set, plus the own classifier's confidence and class
        entropy where it has labels. What compare-samplers plots for an image run."""
        reference = image_reference(run, "own", report=report)
        what = (f"Fréchet distance in {reference.extractor.name} features (sha256 {reference.extractor.sha256[:12]}) "
                f"to {reference.description['what']}")
        return what, lambda data: quick_scores(reference, data), "frechet_distance"

    def training_measure(self, run: Run, report=lambda message: None):
        """(what is measured, function data-space samples -> {metric: value}, the metric that
        decides the best step): what --eval-every measures on an image run. The Fréchet distance,
        KID and precision/recall in the run's own features (trained on its data on first use,
        saved in RUN/features/) to the whole data set."""
        reference = image_reference(run, "own", report=report)
        what = (f"{reference.extractor.name} features (sha256 {reference.extractor.sha256[:12]}) "
                f"against {reference.description['what']}")

        def measure(data: np.ndarray) -> dict:
            scores = feature_scores(reference, reference.extractor.features(nhwc_to_nchw(data)))
            kid = scores.pop("kid")
            return {"frechet_distance": scores["frechet_distance"], "kid": kid["mean"], "kid_std": kid["std"],
                    "precision": scores["precision"], "recall": scores["recall"]}

        return what, measure, "frechet_distance"

    def summary(self, config, images: np.ndarray) -> str | None:
        """What `ddpmkit sample` prints after image samples: nothing (their measure needs `evaluate`)."""
        return None

    def end_of_training(self, run: Run, samples) -> dict:
        """What an image run's end-of-training pictures measure for metrics.json: nothing (`evaluate` measures)."""
        return {}
