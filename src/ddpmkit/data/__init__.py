"""Datasets -> float tensors in [-1, 1] (images) or normalised points (toy), with labels.

Also the one deterministic batch order every run uses, so a resumed run sees
exactly the batches the uninterrupted run would have seen, and the one held-out split.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, default_collate

from ..errors import UserError

HOLDOUT_SEED = 0  # one split per data set, whatever the run's seed: held-out scores compare across runs


def holdout_split(n: int, share: float) -> tuple[np.ndarray, np.ndarray]:
    """(training, held-out) indices, each sorted: round(share·n) examples chosen by a fixed
    seeded permutation are held out; at least one is kept for training."""
    if share <= 0:
        return np.arange(n), np.arange(0)
    held = min(max(1, round(share * n)), n - 1)
    if held <= 0:
        raise UserError(f"--holdout {share} leaves no image to train on: the data set has {n} image(s); use --holdout 0")
    order = np.random.default_rng(HOLDOUT_SEED).permutation(n)
    return np.sort(order[held:]), np.sort(order[:held])


class BatchStream(torch.utils.data.Sampler):
    """Index batches of an endless stream: the concatenation of one permutation of
    range(n) per epoch, epoch e seeded by (seed, e). Batch k is stream positions
    [k·B, (k+1)·B), so it depends only on (seed, k): resuming at batch k is exact, and
    a data set smaller than a batch simply spans epochs.

    The distributed sampler too: with shard (rank, size) it yields rank's contiguous
    B/size rows of each global batch k. The global batch still depends only on (seed, k),
    so a run can resume with a different number of processes and see the same data.
    """

    def __init__(self, n: int, batch_size: int, seed: int, start_batch: int = 0, shard: tuple[int, int] = (0, 1)):
        rank, size = shard
        if batch_size % size or not 0 <= rank < size:
            raise ValueError(f"a batch of {batch_size} cannot be shared by rank {rank} of {size} processes")
        self.n, self.batch_size, self.seed, self.start_batch = n, batch_size, seed, start_batch
        share = batch_size // size
        self.rows = slice(rank * share, (rank + 1) * share)

    def _permutation(self, epoch: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return torch.randperm(self.n, generator=g)

    def __iter__(self) -> Iterator[list[int]]:
        pos = self.start_batch * self.batch_size
        epoch, offset = divmod(pos, self.n)
        perm = self._permutation(epoch)
        while True:
            batch: list[int] = []
            while len(batch) < self.batch_size:
                take = perm[offset : offset + self.batch_size - len(batch)]
                batch.extend(take.tolist())
                offset += len(take)
                if offset == self.n:
                    epoch, offset = epoch + 1, 0
                    perm = self._permutation(epoch)
            yield batch[self.rows]


def _collate(data):
    # In-memory data sets return a ready (x, labels) batch from __getitems__.
    return data if isinstance(data, tuple) else default_collate(data)


def batches(
    dataset: Dataset, batch_size: int, seed: int, start_batch: int = 0, num_workers: int = 0,
    shard: tuple[int, int] = (0, 1),
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Endless (x, labels) batches in BatchStream order; labels are -1 when unlabelled.
    batch_size is the global batch; with shard (rank, size) this rank gets its
    batch_size/size rows of each."""
    loader = DataLoader(
        dataset,
        batch_sampler=BatchStream(len(dataset), batch_size, seed, start_batch, shard),
        num_workers=num_workers,
        collate_fn=_collate,
        persistent_workers=num_workers > 0,
        # Its own generator: the loader's worker seed must not draw from the global RNG,
        # which dropout uses and a resumed run restores.
        generator=torch.Generator().manual_seed(seed),
    )
    return iter(loader)
