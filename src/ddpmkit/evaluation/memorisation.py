"""Does a model copy its training images? Each sample's nearest training image in pixel
space, against the same distance for real images left out in turn."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from .. import metrics
from .reference import REFERENCE_SEED, ImageReference, chunks

CALIBRATION_IMAGES = 1_000  # real images whose leave-one-out distance calibrates the copy check
MEMORISATION_SIDE = 64  # the copy check compares pixels at most this many px on a side


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
    for start, images in chunks(dataset, np.arange(len(dataset)), chunk):
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
