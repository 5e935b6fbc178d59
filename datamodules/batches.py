"""Batches sliced straight out of in-memory tensors: one gather per batch, no per-sample Python work."""

from __future__ import annotations

from collections.abc import Iterator

import torch


class ShardedOrder:
    """The order in which one rank visits the samples of an epoch.

    With `shuffle`, the epoch's order is a permutation drawn from `seed + epoch` (Lightning calls
    `set_epoch` before every epoch, as for a DistributedSampler). Rank r of w takes every w-th sample
    of that order, so ranks see disjoint shards of the same epoch, without padding or repeated samples.
    """

    def __init__(self, num_samples: int, *, shuffle: bool, seed: int = 0, rank: int = 0, world_size: int = 1):
        self.num_samples = num_samples
        self.shuffle = shuffle
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def indices(self) -> torch.Tensor:
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed + self.epoch)
            order = torch.randperm(self.num_samples, generator=generator)
        else:
            order = torch.arange(self.num_samples)
        return order[self.rank :: self.world_size]

    def __len__(self) -> int:
        return len(range(self.rank, self.num_samples, self.world_size))


class TensorBatches:
    """An iterable of batches `tuple(t[idx] for t in tensors)` over tensors sharing their first dimension.

    Lightning treats it like a DataLoader: it has a length and a `sampler` whose epoch it sets.
    """

    batch_sampler = None  # as a DataLoader's when it does not batch: Lightning looks for the attribute

    def __init__(
        self,
        tensors: tuple[torch.Tensor, ...],
        batch_size: int,
        sampler: ShardedOrder,
        *,
        drop_last: bool = False,
    ) -> None:
        self.tensors = tensors
        self.batch_size = batch_size
        self.sampler = sampler
        self.drop_last = drop_last

    def __len__(self) -> int:
        n = len(self.sampler)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, ...]]:
        indices = self.sampler.indices()
        for start in range(0, len(self) * self.batch_size, self.batch_size):
            batch_indices = indices[start : start + self.batch_size]
            yield tuple(t[batch_indices] for t in self.tensors)
