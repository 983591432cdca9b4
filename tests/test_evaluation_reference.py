"""evaluation.reference: what image samples are measured against (the run's real images, their
feature statistics, the feature extractor) and the caches that make repeated evaluations cheap
and comparable."""

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from ddpmkit import api, build
from ddpmkit.build import load_run
from ddpmkit.cli import main
from ddpmkit.data.images import load_image_data
from ddpmkit.evaluation import cache_dir, dataset_fingerprint, image_reference, own_features, real_statistics, reference
from ddpmkit.errors import UserError
from ddpmkit.evaluation.reference import CACHE_KEY
from ddpmkit.features import OwnFeatures, OwnTraining

from helpers import TINY_IMAGES


def test_the_cache_is_where_ddpmkit_cache_says(monkeypatch, tmp_path):
    monkeypatch.setenv("DDPMKIT_CACHE", str(tmp_path / "c"))
    assert cache_dir() == tmp_path / "c"
    monkeypatch.delenv("DDPMKIT_CACHE")
    assert cache_dir() == Path.home() / ".cache" / "ddpmkit"


def test_the_fingerprint_is_the_data_itself(tmp_path):
    images = np.random.default_rng(0).integers(0, 256, (6, 4, 4), dtype=np.uint8)
    np.save(tmp_path / "a.npy", images)
    first = dataset_fingerprint(load_image_data(str(tmp_path / "a.npy")), np.arange(6))
    assert first == dataset_fingerprint(load_image_data(str(tmp_path / "a.npy")), np.arange(6))
    images[3, 2, 1] ^= 1  # one bit of one pixel
    np.save(tmp_path / "a.npy", images)
    edited = load_image_data(str(tmp_path / "a.npy"))
    assert dataset_fingerprint(edited, np.arange(6)) != first
    assert dataset_fingerprint(edited, np.arange(3)) == dataset_fingerprint(load_image_data(str(tmp_path / "a.npy")), np.arange(3))


class MeanFeatures:
    """A feature extractor of two numbers per image (its mean and its first pixel) that counts its calls."""

    name = "mean"

    def __init__(self):
        self.calls = 0

    def features(self, images):
        self.calls += 1
        x = images.double().flatten(1)
        return torch.stack([x.mean(1), x[:, 0]], 1).numpy()


def test_real_statistics_are_computed_once_and_a_damaged_cache_file_is_recomputed(tmp_path, monkeypatch):
    monkeypatch.setenv("DDPMKIT_CACHE", str(tmp_path / "cache"))
    np.save(tmp_path / "a.npy", np.random.default_rng(0).integers(0, 256, (40, 4, 4), dtype=np.uint8))
    data = load_image_data(str(tmp_path / "a.npy"))
    extractor, key = MeanFeatures(), {"data": "a", "features": "mean"}
    first = real_statistics(data, np.arange(40), extractor, key)
    f = MeanFeatures().features(data.batch(range(40))[0])
    assert not first.cached and first.num_images == 40
    np.testing.assert_allclose(first.mu.numpy(), f.mean(0))
    np.testing.assert_allclose(first.sigma.numpy(), np.cov(f, rowvar=False))
    calls = extractor.calls
    again = real_statistics(data, np.arange(40), extractor, key)
    assert again.cached and extractor.calls == calls and torch.equal(again.mu, first.mu)
    (path,) = (cache_dir() / "stats").glob("*.safetensors")
    path.write_bytes(path.read_bytes()[:-16])  # truncated
    repaired = real_statistics(data, np.arange(40), extractor, key)
    assert not repaired.cached and extractor.calls > calls and torch.equal(repaired.mu, first.mu)
    assert not real_statistics(data, np.arange(40), extractor, {**key, "features": "other"}).cached  # another key


def test_another_run_on_the_same_data_copies_the_cached_feature_network(evaluated, eval_cache, tmp_path, monkeypatch):
    other = tmp_path / "other"
    assert main(["train", "--out", str(other), *TINY_IMAGES, "--seed", "3"]) == 0

    def no_training(*args, **kwargs):
        raise AssertionError("the own features were trained again")

    monkeypatch.setattr(reference, "train_own_features", no_training)
    messages = []
    found = image_reference(load_run(other), report=messages.append)
    assert found.extractor.sha256 == evaluated.own["sha256"]  # one network for both runs: comparable numbers
    assert any("from the cache" in m for m in messages)
    assert OwnFeatures.load(other / "features").sha256 == evaluated.own["sha256"]  # saved with the run too
    assert found.stats.cached  # and so the real statistics are shared


def test_a_damaged_cached_feature_network_is_trained_again(evaluated, eval_cache, tmp_path):
    run = load_run(evaluated.run)
    dataset = run.modality.load(run.config.seed)[0]
    training = OwnTraining(epochs=1, max_steps=5)  # settings of their own: a cache entry of their own
    first = own_features(dataclasses.replace(run, directory=tmp_path / "a"), dataset, training)
    (entry,) = [p.parent for p in (eval_cache / "features").glob(f"*/{CACHE_KEY}")
                if json.loads(p.read_text())["training"] == dataclasses.asdict(training)]
    weights = (entry / "own.safetensors").read_bytes()
    (entry / "own.safetensors").write_bytes(weights[:-8] + bytes(8))  # tamper with the last weights
    messages = []
    again = own_features(dataclasses.replace(run, directory=tmp_path / "b"), dataset, training, messages.append)
    assert any(m.startswith("training the own feature classifier") for m in messages), messages
    assert again.sha256 == first.sha256 and OwnFeatures.load(entry).sha256 == first.sha256  # entry repaired


def test_too_few_real_images_cannot_be_a_reference(tmp_path):
    np.save(tmp_path / "four.npy", np.zeros((4, 8, 8), np.uint8))
    config = api.default_config(str(tmp_path / "four.npy"))
    config = build.resolve_config(config, build.modality(config).load(0)[1])
    run = build.make_run(tmp_path, config, build.build_net(config))
    with pytest.raises(UserError, match="has 4 images; sample quality needs at least 5 real images"):
        image_reference(run)
