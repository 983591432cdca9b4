"""data: the one deterministic batch order every run uses (resumable, shardable over processes)
and the one held-out split."""

import numpy as np
import pytest
import torch

from ddpmkit.data import BatchStream, batches, holdout_split
from ddpmkit.data.toy import PointDataset
from ddpmkit.distributed import World
from ddpmkit.errors import UserError


def test_holdout_split_is_disjoint_fixed_and_never_empty():
    train, held = holdout_split(1797, 0.1)
    assert len(held) == 180 and len(train) == 1617
    assert np.array_equal(np.sort(np.concatenate([train, held])), np.arange(1797))
    assert np.array_equal(train, np.sort(train)) and np.array_equal(held, np.sort(held))
    again, _ = holdout_split(1797, 0.1)
    assert np.array_equal(train, again)
    assert len(holdout_split(10, 0.01)[1]) == 1 and len(holdout_split(10, 0.99)[0]) == 1  # never empty
    assert len(holdout_split(10, 0)[1]) == 0
    with pytest.raises(UserError, match="--holdout 0.5 leaves no image to train on: the data set has 1 image"):
        holdout_split(1, 0.5)


def test_batch_k_depends_only_on_the_seed_and_k():
    """Resuming at batch k gives the batches the uninterrupted stream gives from k on; every
    epoch is a permutation, and a data set smaller than a batch spans epochs."""
    whole = iter(BatchStream(50, 12, seed=3))
    first = [next(whole) for _ in range(10)]
    resumed = iter(BatchStream(50, 12, seed=3, start_batch=6))
    assert [next(resumed) for _ in range(4)] == first[6:]
    flat = sum(first, [])
    assert sorted(flat[:50]) == list(range(50)) and sorted(flat[50:100]) == list(range(50))
    assert next(iter(BatchStream(50, 12, seed=4))) != first[0]
    tiny = iter(BatchStream(5, 12, seed=0))
    assert sorted(next(tiny)[:10]) == sorted(list(range(5)) * 2)


def test_shards_of_a_global_batch_are_its_rows():
    whole = iter(BatchStream(50, 12, seed=3, start_batch=5))
    parts = [iter(BatchStream(50, 12, seed=3, start_batch=5, shard=(r, 3))) for r in range(3)]
    for _ in range(6):  # spans epochs: 12 does not divide 50
        assert next(whole) == sum((next(p) for p in parts), [])
    assert World(rank=1, size=4).rows(8) == slice(2, 4)
    with pytest.raises(ValueError):
        BatchStream(50, 10, seed=0, shard=(0, 3))


def test_batches_yield_points_and_labels_in_stream_order():
    points = np.random.default_rng(0).standard_normal((20, 2)).astype(np.float32)
    data = PointDataset(points, np.arange(20) % 2, mean=np.zeros(2), scale=1.0)
    x, labels = next(batches(data, 8, seed=1, start_batch=2))
    order = list(iter(BatchStream(20, 8, seed=1, start_batch=2)).__next__())
    assert torch.equal(x, torch.from_numpy(points[order])) and labels.tolist() == [i % 2 for i in order]
    unlabelled = PointDataset(points, None, mean=np.zeros(2), scale=1.0)
    assert next(batches(unlabelled, 4, seed=0))[1].tolist() == [-1] * 4
