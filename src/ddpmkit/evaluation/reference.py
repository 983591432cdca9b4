"""What samples of an image run are measured against: its real images, their feature
statistics in a feature space, and the feature extractor itself.

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
from safetensors import safe_open
from safetensors.torch import load_file
from safetensors.torch import save as safetensors_bytes

from ..errors import UserError, check_choice
from ..features import (
    OWN_JSON,
    InceptionFeatures,
    OwnFeatures,
    OwnTraining,
    train_own_features,
)
from ..modality import images_only
from ..rundir import atomic_write, atomic_write_bytes, atomic_write_text
from ..sampling import Run

FEATURES = ("own", "inception")
MAX_REAL = 50_000  # real images in the reference (a seeded subset beyond this)
MIN_REAL = 5  # fewer real images cannot hold a k = 3 nearest-neighbour manifold with one left out
MAX_STORED_FEATURES = 10_000  # real feature rows cached for KID and precision/recall
REFERENCE_SEED = 7_919  # real-image subsets are fixed by this, whatever the sampling seed: one reference for all
CACHE_KEY = "key.json"  # beside a cached own feature network: the data hash and training settings it was made from


def cache_dir() -> Path:
    """ddpmkit's cache: $DDPMKIT_CACHE if set, else ~/.cache/ddpmkit."""
    return Path(os.environ.get("DDPMKIT_CACHE") or Path.home() / ".cache" / "ddpmkit").expanduser()


# ---- the real data ---------------------------------------------------------------------------
def chunks(dataset, indices: np.ndarray, size: int = 512):
    """uint8 images [B, C, H, W] of `dataset` at `indices`, `size` at a time, with their offset."""
    for start in range(0, len(indices), size):
        yield start, dataset.batch(indices[start : start + size].tolist())[0]


def dataset_fingerprint(dataset, indices: np.ndarray) -> str:
    """sha256 of the images' bytes (in order) and labels: the cache key is the data itself, so
    an edited folder never gets stale statistics."""
    h = hashlib.sha256(f"{dataset.channels}x{dataset.image_size}".encode())
    for _, images in chunks(dataset, indices):
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
    for start, images in chunks(dataset, indices):
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
    atomic_write_bytes(path, safetensors_bytes(tensors, metadata={"key": text}))  # a full disk: OSError
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
    device = run.device
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
        atomic_write_text(cached / CACHE_KEY, key)  # written last: marks the entry complete
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
    check_choice("--features", features, FEATURES)
    if features == "inception":
        return InceptionFeatures(inception_weights, device=run.device)
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
                    training: OwnTraining = OwnTraining(), ref: Path | None = None) -> ImageReference:
    """Load the run's data, its feature extractor (`features`: own or inception) and the real
    statistics in it (cached, or computed now): everything samples are measured against.
    `ref`: a reference .npz whose μ and Σ replace the data's (with_reference_file)."""
    dataset, _ = run.modality.load(run.config.seed, report)
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
    reference = ImageReference(dataset, indices, fingerprint, extractor, stats, description)
    return reference if ref is None else with_reference_file(reference, ref)


# ---- reference files in the common .npz layout ----------------------------------------------------
REF_KEY = "ddpmkit"  # the .npz entry holding the extractor's identity and the data's description (a JSON string)


def save_reference_npz(path: Path, reference: ImageReference) -> None:
    """The reference's μ and Σ as `path` (.npz with float64 `mu` [F] and `sigma` [F, F]: what
    pytorch-fid's --save-stats writes and EDM's fid.py reads), plus the extractor's identity
    and the data's description under "ddpmkit", which those tools ignore."""
    meta = json.dumps({"features": reference.extractor.identity(), "data": reference.description,
                       "num_images": reference.stats.num_images}, sort_keys=True)

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            np.savez(f, mu=reference.stats.mu.numpy(), sigma=reference.stats.sigma.numpy(), **{REF_KEY: np.array(meta)})

    atomic_write(path, write)


def is_reference_file(path: Path) -> bool:
    """Whether `path` is a reference .npz ddpmkit wrote (--save-ref: its "ddpmkit" entry), which --save-ref may replace."""
    try:
        with np.load(path, allow_pickle=False) as f:
            return REF_KEY in f.files
    except (OSError, ValueError, AttributeError):  # not an .npz (np.load of a .npy gives an array: no .files)
        return False


def write_reference(run: Run, path: Path, features: str = "own", inception_weights=None, report=lambda m: None) -> dict:
    """--save-ref: an image run's real-data μ and Σ in `features` as the .npz `path`; returns its description."""
    images_only(run.modality, "--save-ref", "its measures are distances to fresh points")
    reference = image_reference(run, features, inception_weights, report)
    save_reference_npz(Path(path), reference)
    return reference.description


def with_reference_file(reference: ImageReference, path: Path) -> ImageReference:
    """`reference` with μ and Σ read from a .npz file (ddpmkit's --save-ref, pytorch-fid's
    --save-stats, EDM's fid.py ref): the Fréchet distance is then measured against the file;
    KID, precision/recall and near-copies need features and stay on the run's data. Refused
    when the feature dimension differs or the file names another extractor."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as f:
            mu, sigma = np.asarray(f["mu"], np.float64), np.asarray(f["sigma"], np.float64)
            meta = json.loads(str(f[REF_KEY])) if REF_KEY in f.files else None
    except (OSError, ValueError, KeyError) as e:
        raise UserError(f"--ref {path} is not a reference .npz with 'mu' and 'sigma' ({e}); write one with "
                        "ddpmkit evaluate --save-ref or pytorch-fid --save-stats") from None
    dim = reference.stats.mu.shape[0]
    if mu.shape != (dim,) or sigma.shape != (dim, dim):
        raise UserError(f"--ref {path} holds statistics of {mu.shape[0] if mu.ndim else '?'} features; "
                        f"{reference.extractor.name} has {dim}: use the --features the file was made with")
    ours = reference.extractor.identity()
    if meta is not None and (meta["features"]["name"], meta["features"]["sha256"]) != (ours["name"], ours["sha256"]):
        raise UserError(f"--ref {path} was made with {meta['features']['name']} (sha256 {meta['features']['sha256'][:12]}), "
                        f"not {ours['name']} (sha256 {ours['sha256'][:12]}): use the --features the file was made with")
    stats = dataclasses.replace(reference.stats, mu=torch.from_numpy(mu), sigma=torch.from_numpy(sigma))
    made = (f"{meta['data']['what']}, {meta['num_images']:,} images" if meta is not None
            else "an extractor the file does not record")
    description = {**reference.description, "file": str(path),
                   "what": f"mu and sigma of {path} ({made}) for the Fréchet distance; KID, precision/recall and "
                           f"near-copies against {reference.description['what']}"}
    return dataclasses.replace(reference, stats=stats, description=description)
