"""evaluation.memorisation: each sample's nearest training image in pixel space, over every
training image, against the same distance for real images left out in turn."""

import numpy as np
import torch

from ddpmkit.build import load_run
from ddpmkit.evaluation import image_reference, memorisation, reference


def test_memorisation_flags_training_images_given_as_samples(evaluated, eval_cache):
    ref = image_reference(load_run(evaluated.run))
    copies = ref.dataset.batch(range(0, 60, 2))[0]  # 30 training images
    memo = memorisation(ref, copies)
    assert memo["flags"].all() and memo["sample_distances"].max() == 0.0 and memo["fraction"] == 1.0
    assert memo["nearest"].tolist() == list(range(0, 60, 2))
    noise = torch.randint(0, 256, (30, 1, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    fresh = memorisation(ref, noise)
    assert not fresh["flags"].any() and fresh["fraction"] == 0.0
    assert memo["dim"] == 64 and memo["searched_images"] == len(ref.dataset) == 1617


def test_memorisation_searches_every_training_image_beyond_the_reference_subset(evaluated, eval_cache, monkeypatch):
    monkeypatch.setattr(reference, "MAX_REAL", 100)  # a reference subset of 100 of the digits trained on
    ref = image_reference(load_run(evaluated.run))
    n = len(ref.dataset)
    outside = np.setdiff1d(np.arange(n), ref.indices)[[0, 500, 1000, -1]]
    assert len(ref.indices) == 100 and n > 1000
    memo = memorisation(ref, ref.dataset.batch(outside.tolist())[0], chunk=256)
    assert memo["flags"].all() and memo["sample_distances"].max() == 0.0
    assert memo["nearest"].tolist() == outside.tolist() and memo["searched_images"] == n
    assert memo["calibration_images"] == 100  # calibration images come from the subset
