"""Sample quality of a run, with everything that makes a number comparable beside it.

`evaluate_quality(run, ...)` draws samples with a named sampler and measures them:
- images: Fréchet distance (FID with Inception features) and KID to the run's data, improved
  precision and recall, and a memorisation check with a picture of the closest pairs;
- 2-D points: MMD² and sliced Wasserstein distance to fresh points (plus precision/recall).
Each result is one record (a dict) naming the sample count, sampler, steps, network
evaluations and passes (twice the evaluations under guidance), seed, weights, the feature
extractor and its weight hash, the preprocessing and the reference set; `format_report`
turns it into the short table the CLI prints.

The real data's feature statistics are cached per data content and extractor in
`cache_dir()/stats` (default ~/.cache/ddpmkit, or $DDPMKIT_CACHE), so repeated evaluations
only pay for the samples; the own feature network is cached per data content and training
settings in `cache_dir()/features`, so every run on the same data gets the same network.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from . import checkpoint, metrics, viz
from .build import Run, load_data
from .errors import UserError
from .features import OWN_JSON, InceptionFeatures, OwnFeatures, OwnTraining, train_own_features

FEATURES = ("own", "inception")
MAX_REAL = 50_000  # real images in the reference (a seeded subset beyond this)
MIN_REAL = 5  # fewer real images cannot hold a k = 3 nearest-neighbour manifold with one left out
MAX_STORED_FEATURES = 10_000  # real feature rows cached for KID and precision/recall
CALIBRATION_IMAGES = 1_000  # real images whose leave-one-out distance calibrates the copy check
MEMORISATION_SIDE = 64  # the copy check compares pixels at most this many px on a side
PAPER_SAMPLES = 50_000  # the sample count of published FIDs
CLOSEST_PAIRS = 8  # pairs drawn in eval/closest_pairs.png
REFERENCE_SEED = 7_919  # real-image subsets are fixed by this, whatever the sampling seed: one reference for all
CACHE_KEY = "key.json"  # beside a cached own feature network: the data hash and training settings it was made from


def cache_dir() -> Path:
    """ddpmkit's cache: $DDPMKIT_CACHE if set, else ~/.cache/ddpmkit."""
    return Path(os.environ.get("DDPMKIT_CACHE") or Path.home() / ".cache" / "ddpmkit").expanduser()


# ---- the real data ---------------------------------------------------------------------------
def _chunks(dataset, indices: np.ndarray, size: int = 512):
    """uint8 images [B, C, H, W] of `dataset` at `indices`, `size` at a time, with their offset."""
    for start in range(0, len(indices), size):
        yield start, dataset.batch(indices[start : start + size].tolist())[0]


def dataset_fingerprint(dataset, indices: np.ndarray) -> str:
    """sha256 of the images' bytes (in order) and labels: the cache key is the data itself, so
    an edited folder never gets stale statistics."""
    h = hashlib.sha256(f"{dataset.channels}x{dataset.image_size}".encode())
    for _, images in _chunks(dataset, indices):
        h.update(images.contiguous().numpy().tobytes())
    if dataset.labels is not None:
        h.update(dataset.labels[torch.as_tensor(indices)].numpy().tobytes())
    return h.hexdigest()


@dataclass
class Reference:
    """Feature statistics of the real data in one feature space."""

    mu: torch.Tensor  # [F] float64
    sigma: torch.Tensor  # [F, F] float64
    features: np.ndarray  # [≤ MAX_STORED_FEATURES, F]: a seeded subset, for KID and precision/recall
    num_images: int  # images μ and Σ were computed from
    cached: bool  # read from the cache rather than computed now


def real_statistics(dataset, indices: np.ndarray, extractor, key: dict, report=lambda m: None) -> Reference:
    """μ, Σ and a feature subset of the real images at `indices`, from the cache when `key`
    (data fingerprint + extractor identity) was measured before; else computed and cached."""
    text = json.dumps(key, sort_keys=True)
    path = cache_dir() / "stats" / f"{hashlib.sha256(text.encode()).hexdigest()[:32]}.safetensors"
    if path.is_file():
        try:
            with safe_open(str(path), "pt") as f:  # the key is stored too: a hash collision must not pass
                stored_key = (f.metadata() or {}).get("key")
            tensors = load_file(str(path))
            if stored_key == text:
                return Reference(tensors["mu"], tensors["sigma"], tensors["features"].numpy(), int(tensors["num_images"]), True)
        except Exception:  # noqa: BLE001 - a damaged cache file is recomputed, never trusted
            pass
    report(f"computing {extractor.name} features of {len(indices):,} real images (cached for next time)")
    keep = np.sort(np.random.default_rng(REFERENCE_SEED).permutation(len(indices))[:MAX_STORED_FEATURES])
    total, outer, stored = None, None, []
    for start, images in _chunks(dataset, indices):
        f = torch.from_numpy(extractor.features(images))  # float64 [B, F]
        total = f.sum(0) if total is None else total + f.sum(0)
        outer = f.T @ f if outer is None else outer + f.T @ f
        rows = keep[(keep >= start) & (keep < start + len(f))] - start
        stored.append(f[torch.from_numpy(rows)])
    n = len(indices)
    mu = total / n
    sigma = (outer - n * torch.outer(mu, mu)) / (n - 1)  # float64 sums: exact enough for N ≤ 50k
    features = torch.cat(stored).float()
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {"mu": mu, "sigma": sigma, "features": features, "num_images": torch.tensor(n)}
    checkpoint.atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata={"key": text}))
    return Reference(mu, sigma, features.numpy(), n, False)


def real_indices(n: int) -> np.ndarray:
    """All of a data set's indices, or a sorted subset of MAX_REAL of them, the same every time."""
    if n <= MAX_REAL:
        return np.arange(n)
    return np.sort(np.random.default_rng(REFERENCE_SEED).permutation(n)[:MAX_REAL])


# ---- feature extractors for a run --------------------------------------------------------------
def own_features(run: Run, dataset, training: OwnTraining = OwnTraining(), report=lambda m: None,
                 data_sha256: str | None = None) -> OwnFeatures:
    """The run's own feature network: RUN/features/ when present (so every evaluation of the
    run uses the same one); else a copy of the network trained before on the same data with the
    same settings, kept in cache_dir()/features/ (so runs on the same data share one network
    whatever device trained it); else trained now on the CPU (or, without labels, fixed at
    random), kept in the cache and saved in RUN/features/.
    `data_sha256`: dataset_fingerprint of every image of `dataset`, when the caller has it."""
    device = next(run.net.parameters()).device
    directory = Path(run.directory) / "features"
    if (directory / OWN_JSON).is_file():
        return OwnFeatures.load(directory, device)
    if data_sha256 is None:
        data_sha256 = dataset_fingerprint(dataset, np.arange(len(dataset)))
    key = json.dumps({"data_sha256": data_sha256, "training": dataclasses.asdict(training)}, sort_keys=True)
    cached = cache_dir() / "features" / hashlib.sha256(key.encode()).hexdigest()[:32]
    extractor = _cached_own_features(cached, key, device)
    if extractor is not None:
        report(f"copied {extractor.description} from the cache ({cached}/)")
    else:
        data = {"name": run.config.data.name, "image_size": list(dataset.image_size), "channels": dataset.channels}
        extractor = train_own_features(dataset, data, training, device, report)
        extractor.save(cached)
        checkpoint.atomic_write_text(cached / CACHE_KEY, key)  # written last: marks the entry complete
    extractor.save(directory)
    report(f"saved {extractor.description} to {directory}/")
    return extractor


def _cached_own_features(path: Path, key: str, device) -> OwnFeatures | None:
    """The own feature network cached at `path` for `key`, or None. The key is stored beside it
    (a hash collision must not pass); a damaged entry is retrained, never trusted."""
    try:
        if (path / CACHE_KEY).read_text() != key:
            return None
        return OwnFeatures.load(path, device)
    except (OSError, UserError):
        return None


def image_extractor(run: Run, dataset, features: str = "own", inception_weights=None, report=lambda m: None,
                    training: OwnTraining = OwnTraining(), data_sha256: str | None = None):
    if features not in FEATURES:
        raise UserError(f"unknown --features {features!r}; choose one of: {', '.join(FEATURES)}")
    if features == "inception":
        return InceptionFeatures(inception_weights, device=next(run.net.parameters()).device)
    if inception_weights is not None:
        raise UserError("--inception-weights goes with --features inception")
    return own_features(run, dataset, training, report, data_sha256)


@dataclass
class ImageReference:
    """A run's data set, the extractor and its real statistics: what samples are measured against."""

    dataset: object
    indices: np.ndarray
    fingerprint: str
    extractor: object
    stats: Reference
    description: dict


def image_reference(run: Run, features: str = "own", inception_weights=None, report=lambda m: None,
                    training: OwnTraining = OwnTraining()) -> ImageReference:
    """Load the run's data, its feature extractor (`features`: own or inception) and the real
    statistics in it (cached, or computed now): everything samples are measured against."""
    if run.config.is_toy:
        raise UserError(f"--features applies to image runs; {run.config.data.name} is 2-D data, measured by MMD and sliced Wasserstein")
    dataset, _ = load_data(run.config.data, run.config.seed, report)
    if len(dataset) < MIN_REAL:
        raise UserError(f"{run.config.data.name} has {len(dataset)} images; sample quality needs at least {MIN_REAL} real "
                        "images to compare with (precision/recall use each image's 3rd nearest neighbour)")
    indices = real_indices(len(dataset))
    fingerprint = dataset_fingerprint(dataset, indices)
    extractor = image_extractor(run, dataset, features, inception_weights, report, training,
                                data_sha256=fingerprint if len(indices) == len(dataset) else None)
    key = {"data": {"name": run.config.data.name, "image_size": list(dataset.image_size), "channels": dataset.channels,
                    "num_images": len(indices), "sha256": fingerprint}, "features": extractor.identity()}
    stats = real_statistics(dataset, indices, extractor, key, report)
    h, w = dataset.image_size
    what = (f"all {len(indices):,} images of {run.config.data.name} (the training data)" if len(indices) == len(dataset)
            else f"a seeded subset of {len(indices):,} of the {len(dataset):,} images of {run.config.data.name} (the training data)")
    description = {"data": run.config.data.name, "what": what, "num_images": len(indices), "image_size": [h, w],
                   "channels": dataset.channels, "sha256": fingerprint, "statistics": "cached" if stats.cached else "computed"}
    return ImageReference(dataset, indices, fingerprint, extractor, stats, description)


# ---- measuring samples ---------------------------------------------------------------------------
def _nhwc_to_nchw(images: np.ndarray) -> torch.Tensor:
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


def _pixels(images: torch.Tensor) -> torch.Tensor:
    """uint8 [B, C, H, W] → float [B, D] in [0, 1], area-averaged to ≤ MEMORISATION_SIDE px."""
    x = images.float() / 255
    h, w = x.shape[-2:]
    factor = -(-max(h, w) // MEMORISATION_SIDE)
    if factor > 1:
        x = F.adaptive_avg_pool2d(x, (max(1, h // factor), max(1, w // factor)))
    return x.flatten(1)


def memorisation(reference: ImageReference, samples: torch.Tensor, quantile: float = 0.01, chunk: int = 1024) -> dict:
    """Each sample's nearest training image in pixel space, searched over *every* training
    image (`chunk` at a time, so memory stays bounded), against the same distance for real
    images left out in turn (metrics.near_copies). A run holds few or no images out (digits:
    180, --holdout), too few for a 1% quantile, so the calibration leaves training images out
    instead: each of up to CALIBRATION_IMAGES real images of the reference subset is compared
    with all the *other* training images, exactly the position of a new image from the data
    distribution (with N − 1 instead of N references). Pixel space, because
    a copy is a copy of pixels; feature spaces also call two different images of one class close.
    Distances are RMS differences of pixels in [0, 1]."""
    dataset, indices = reference.dataset, reference.indices
    rng = np.random.default_rng(REFERENCE_SEED)
    calib = indices[np.sort(rng.permutation(len(indices))[:CALIBRATION_IMAGES])]  # dataset indices, sorted
    queries = _pixels(samples)
    calib_pixels = _pixels(dataset.batch(calib.tolist())[0])
    dim = queries.shape[1]
    best_s, arg_s = np.full(len(queries), np.inf), np.zeros(len(queries), dtype=np.int64)
    best_c = np.full(len(calib), np.inf)
    for start, images in _chunks(dataset, np.arange(len(dataset)), chunk):
        ref = _pixels(images)
        d, i = metrics.nearest_neighbours(queries, ref)
        better = d < best_s
        best_s[better], arg_s[better] = d[better], i[better] + start
        inside = (calib >= start) & (calib < start + len(ref))
        exclude = np.where(inside, calib - start, -1)
        d, _ = metrics.nearest_neighbours(calib_pixels, ref, exclude=exclude)
        best_c = np.minimum(best_c, d)
    scale = 1 / np.sqrt(dim)  # Euclidean → RMS per pixel value
    result = metrics.near_copies(best_s * scale, best_c * scale, quantile)
    result.update(sample_distances=best_s * scale, nearest=arg_s, calibration_images=len(calib), dim=dim,
                  searched_images=len(dataset))
    return result


def closest_pairs_picture(reference: ImageReference, samples_nhwc: np.ndarray, memo: dict, path: Path) -> None:
    """The CLOSEST_PAIRS samples nearest to a training image, each above that image."""
    order = np.argsort(memo["sample_distances"], kind="stable")[:CLOSEST_PAIRS]
    train = reference.dataset.batch(memo["nearest"][order].tolist())[0].permute(0, 2, 3, 1).numpy()
    labels = [f"d = {memo['sample_distances'][i]:.3f}" + (" near-copy" if memo["flags"][i] else "") for i in order]
    path.parent.mkdir(parents=True, exist_ok=True)
    checkpoint.atomic_write(path, lambda tmp: viz.image_table(
        [list(samples_nhwc[order]), list(train)], ["sample", "nearest\ntraining"], labels, tmp))


def class_scores(extractor: OwnFeatures, images: torch.Tensor) -> dict:
    """Mean top-class confidence of the own classifier and the entropy (nats) of its predicted-
    class histogram (log K when every class is drawn equally often)."""
    probs = extractor.predict_proba(images)
    hist = np.bincount(probs.argmax(1), minlength=probs.shape[1]) / len(probs)
    return {"confidence": float(probs.max(1).mean()), "class_entropy": float(-(hist[hist > 0] * np.log(hist[hist > 0])).sum())}


def quick_scores(reference: ImageReference, samples_nhwc: np.ndarray) -> dict:
    """The Fréchet distance of uint8 samples [N, H, W, C] to the reference (and, with a
    classifier, its confidence and class entropy): the cheap measure compare-samplers uses."""
    images = _nhwc_to_nchw(samples_nhwc)
    mu, sigma = metrics.gaussian_statistics(reference.extractor.features(images))
    scores = {"frechet_distance": metrics.frechet_distance_from_statistics(mu, sigma, reference.stats.mu, reference.stats.sigma),
              "num_samples": len(images)}
    if isinstance(reference.extractor, OwnFeatures) and reference.extractor.is_classifier:
        scores.update(class_scores(reference.extractor, images))
    return scores


@dataclass
class SampleSettings:
    """How the evaluated samples are drawn (every field is recorded)."""

    num: int = 2000  # samples
    sampler: str = "dpm++sde"  # SDE-DPM-Solver++(2M): at 20 steps as good as 1,000 of DDPM on digits (README)
    steps: int | None = 20  # None: all T
    seed: int = 0
    guidance: float = 0.0  # conditional runs: classifier-free guidance w (labels balanced over the classes)
    ema: bool = True  # which weights the run was loaded with (recorded only)


def _check_settings(run: Run, s: SampleSettings, k: int) -> None:
    """Clear errors before any expensive work."""
    from .api import check_labels
    from .samplers import SAMPLERS

    if s.num <= k:
        raise UserError(f"--num-samples must be more than {k} (precision and recall use the {k}-th nearest neighbour), got {s.num}")
    if s.sampler not in SAMPLERS:
        raise UserError(f"unknown sampler {s.sampler!r}; choose one of: {', '.join(SAMPLERS)}")
    T = run.config.diffusion.num_steps
    if s.steps is not None and not 0 < s.steps <= T:
        raise UserError(f"--steps must lie in 1..{T} (the trained T), got {s.steps}")
    if s.guidance:
        check_labels(run.config, None, s.guidance)


def _draw(run: Run, s: SampleSettings):
    from .api import draw, network_evaluations, network_passes

    labels = None
    if run.config.num_classes:
        g = torch.Generator().manual_seed(s.seed)
        labels = (torch.arange(s.num) % run.config.num_classes)[torch.randperm(s.num, generator=g)]
    steps = s.steps or run.config.diffusion.num_steps
    data = draw(run, s.num, seed=s.seed, sampler=s.sampler, steps=s.steps, labels=labels, guidance=s.guidance).data
    guided = s.guidance if labels is not None else 0.0
    record = {"num": s.num, "sampler": s.sampler, "steps": steps, "nfe": network_evaluations(s.sampler, steps),
              "network_passes": network_passes(s.sampler, steps, guided), "seed": s.seed, "weights": "EMA" if s.ema else "live",
              "clip": "none" if run.config.is_toy else "static", "trained_steps_T": run.config.diffusion.num_steps}
    if labels is not None:
        record.update(labels=f"balanced over {run.config.num_classes} classes", guidance=s.guidance)
    return data, record


def evaluate_quality(run: Run, settings: SampleSettings = SampleSettings(), *, features: str = "own",
                     inception_weights=None, k: int = 3, kid_subset: int = 1000, kid_subsets: int = 100,
                     training: OwnTraining = OwnTraining(), out: Path | None = None, report=lambda m: None) -> dict:
    """Draw `settings.num` samples and measure them (see the module docstring); pictures go to
    `out` (default RUN/eval). Returns the record; write_quality_record stores it."""
    _check_settings(run, settings, k)
    if run.config.is_toy:
        if features != "own" or inception_weights is not None:
            raise UserError(f"--features and --inception-weights apply to image runs; {run.config.data.name} is 2-D data")
        return _toy_quality(run, settings, k)
    reference = image_reference(run, features, inception_weights, report, training)
    report(f"drawing {settings.num:,} samples with {settings.sampler}, {settings.steps or run.config.diffusion.num_steps} steps")
    data, sample_record = _draw(run, settings)
    images = _nhwc_to_nchw(data)
    record = {"kind": "images", "samples": sample_record, "features": {**reference.extractor.identity(),
              "description": reference.extractor.description}, "reference": reference.description}
    record.update(feature_scores(reference, reference.extractor.features(images), k=k, kid_subset=kid_subset,
                                 kid_subsets=kid_subsets, seed=settings.seed))
    memo = memorisation(reference, images)
    out = Path(out) if out is not None else Path(run.directory) / "eval"
    closest_pairs_picture(reference, data, memo, out / "closest_pairs.png")
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
    record["note"] = comparability_note(record)
    return record


def _toy_quality(run: Run, settings: SampleSettings, k: int) -> dict:
    from .api import _FRESH_SEED, toy_distances
    from .build import toy_dataset_from_config
    from .data.toy import toy_points

    data, sample_record = _draw(run, settings)
    fresh, _ = toy_points(run.config.data.name, len(data), seed=_FRESH_SEED)  # one reference for every seed
    ds = toy_dataset_from_config(run.config.data)
    precision, recall = metrics.precision_recall((fresh - ds.mean) / ds.scale, (data - ds.mean) / ds.scale, k=k)
    record = {"kind": "points", "samples": sample_record,
              "reference": {"data": run.config.data.name, "num_images": len(fresh),
                            "what": f"{len(fresh):,} fresh {run.config.data.name} points (seed {_FRESH_SEED}, never trained on)"},
              "space": "normalised (the space the model sees)",
              **toy_distances(run.config, data, seed=_FRESH_SEED), "precision": precision, "recall": recall, "k": k}
    record["note"] = comparability_note(record)
    return record


def comparability_note(record: dict) -> str:
    n = record["samples"]["num"]
    if record["kind"] == "points":
        return f"MMD² is unbiased (0 in expectation for a perfect model); both distances shrink with more points: compare at equal N ({n:,})"
    name = "FID" if record["features"]["name"].startswith("inception") else f"the Fréchet distance in {record['features']['name']} features"
    text = f"{name} is biased upward at small N: compare only numbers with the same N ({n:,}), features and reference"
    if n < PAPER_SAMPLES and name == "FID":
        text += f"; papers use {PAPER_SAMPLES:,} samples, so this is not comparable with their FIDs"
    if name != "FID":
        text += "; it is not FID and not comparable with any published FID"
    return text


# ---- metrics.json and the printed table ------------------------------------------------------------
def _identity(record: dict) -> tuple:
    s = record["samples"]
    return (record["kind"], record.get("features", {}).get("sha256"), s["num"], s["sampler"], s["steps"], s["seed"],
            s["weights"], s.get("guidance"))


def write_quality_record(run_dir: Path, record: dict) -> dict:
    """Add `record` to run_dir/metrics.json under "sample_quality" (replacing an earlier
    record of the same settings), atomically; returns the whole file's content."""
    path = Path(run_dir) / "metrics.json"
    content = json.loads(path.read_text()) if path.is_file() else {}
    records = [r for r in content.get("sample_quality", []) if _identity(r) != _identity(record)]
    content["sample_quality"] = [*records, record]
    checkpoint.atomic_write_text(path, json.dumps(content, indent=2))
    return content


def format_report(record: dict) -> list[str]:
    """The short table the CLI prints: one header line per comparability field, one row per number."""
    s = record["samples"]
    labels = f", labels {s['labels']}, guidance {s['guidance']:g}" if "labels" in s else ""
    passes = s.get("network_passes", s["nfe"])
    nfe = f"{s['nfe']} network evaluations each" + (
        f" ({passes} network passes: guidance runs the conditional and the unconditional model)" if passes != s["nfe"] else "")
    lines = [f"samples:   {s['num']:,} from {s['sampler']} with {s['steps']} steps = {nfe} "
             f"(T = {s['trained_steps_T']}), seed {s['seed']}, {s['weights']} weights{labels}",
             f"reference: {record['reference']['what']}"]
    rows = []
    if record["kind"] == "points":
        lines.append(f"space:     {record['space']}")
        rows += [("MMD²", f"{record['mmd']:.5f}", "RBF kernel, median bandwidth, unbiased (lower is better, 0 = same law)"),
                 ("sliced W2", f"{record['sliced_wasserstein']:.4f}", "sliced 2-Wasserstein distance (lower is better)")]
    else:
        f = record["features"]
        lines += [f"features:  {f['description']}", f"           fed as {f['preprocessing']}"]
        fid = "FID" if f["name"].startswith("inception") else "FD"
        kid = record["kid"]
        rows += [(fid, f"{record['frechet_distance']:.4f}", f"Fréchet distance in {f['name']} features (lower is better)"),
                 ("KID", f"{kid['mean']:.5f} ± {kid['std']:.5f}",
                  f"kernel distance, mean ± sd over {kid['subsets']} subsets of {kid['subset_size']:,} (unbiased)")]
    rows += [("precision", f"{record['precision']:.3f}", f"share of samples inside the real manifold (k = {record['k']})"),
             ("recall", f"{record['recall']:.3f}", f"share of real {'points' if record['kind'] == 'points' else 'images'} inside the sample manifold")]
    if record["kind"] == "images":
        m = record["memorisation"]
        rows.append(("near-copies", f"{100 * m['near_copy_fraction']:.1f}%",
                     f"samples nearer a training image than {100 * (1 - m['expected_without_copying']):.0f}% of left-out real images "
                     f"(≈{100 * m['expected_without_copying']:.0f}% without copying)"))
        if "class_entropy" in record:
            rows.append(("classes", f"{record['class_entropy']:.3f} nats",
                         f"entropy of the classifier's predicted classes (mean confidence {record['confidence']:.3f})"))
    width = max(len(v) for _, v, _ in rows)
    lines += [f"  {name:<12} {value:>{width}}   {what}" for name, value, what in rows]
    lines.append(f"note:      {record['note']}")
    return lines
