"""Batches gathered straight from in-memory data: one gather per batch, no per-sample Python work."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

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

    @classmethod
    def for_trainer(cls, trainer: Any, num_samples: int, *, shuffle: bool, seed: int) -> ShardedOrder:
        """The order for this process's rank among the trainer's processes (rank 0 of 1 without a trainer)."""
        rank, world_size = (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)
        return cls(num_samples, shuffle=shuffle, seed=seed, rank=rank, world_size=world_size)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def generator(self) -> torch.Generator:
        return torch.Generator().manual_seed(self.seed + self.epoch)

    def indices(self) -> torch.Tensor:
        if self.shuffle:
            order = torch.randperm(self.num_samples, generator=self.generator())
        else:
            order = torch.arange(self.num_samples)
        return order[self.rank :: self.world_size]

    def __len__(self) -> int:
        return len(range(self.rank, self.num_samples, self.world_size))


class IndexBatches:
    """An iterable of `fetch(indices)` for consecutive batches of the sampler's order.

    With `lengths`, batches are bucketed: the order is cut into pools of `pool_batches` batches, each
    pool is sorted by length and cut into batches, and the batches are shuffled. Padding then costs
    little, while every epoch still mixes lengths differently. Lightning treats it like a DataLoader:
    it has a length and a `sampler` whose epoch it sets.

    It is resumable mid-epoch: Lightning saves `state_dict()` in checkpoints (the epoch and how many
    of its batches training has finished, read from `progress`) and, on resume, the next epoch it
    iterates skips those batches (the order is a function of seed and epoch, so they are the same).
    """

    batch_sampler = None  # as a DataLoader's when it does not batch: Lightning looks for the attribute

    def __init__(
        self,
        fetch: Callable[[torch.Tensor], Any],
        batch_size: int,
        sampler: ShardedOrder,
        *,
        drop_last: bool = False,
        lengths: torch.Tensor | None = None,
        pool_batches: int = 50,
    ) -> None:
        self.fetch = fetch
        self.batch_size = batch_size
        self.sampler = sampler
        self.drop_last = drop_last
        self.lengths = lengths
        self.pool_batches = pool_batches
        self.progress: Callable[[], int] | None = None  # batches of this epoch done, as the trainer counts
        self.resume_at: dict[str, int] | None = None

    def __len__(self) -> int:
        n = len(self.sampler)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def batches(self) -> list[torch.Tensor]:
        indices = self.sampler.indices()[: len(self) * self.batch_size]
        if self.lengths is None:
            return list(indices.split(self.batch_size))
        pool = self.pool_batches * self.batch_size
        batches: list[torch.Tensor] = []
        for start in range(0, len(indices), pool):
            chunk = indices[start : start + pool]
            chunk = chunk[self.lengths[chunk].argsort(stable=True)]
            batches += chunk.split(self.batch_size)
        if self.sampler.shuffle:
            batches = [batches[i] for i in torch.randperm(len(batches), generator=self.sampler.generator())]
        return batches

    def __iter__(self) -> Iterator[Any]:
        batches = self.batches()
        if self.resume_at is not None:
            if self.resume_at["epoch"] == self.sampler.epoch:
                batches = batches[self.resume_at["batches_done"] :]
            self.resume_at = None
        for batch_indices in batches:
            yield self.fetch(batch_indices)

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.sampler.epoch, "batches_done": self.progress() if self.progress else 0}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.resume_at = dict(state)


def batches_done(trainer: Any) -> Callable[[], int] | None:
    """How many batches of the running epoch the trainer has trained on, read when a checkpoint is saved."""
    if trainer is None:
        return None
    return lambda: trainer.fit_loop.epoch_loop.batch_progress.current.processed


def tensor_batches(
    tensors: tuple[torch.Tensor, ...], batch_size: int, sampler: ShardedOrder, **kwargs: Any
) -> IndexBatches:
    """Batches `tuple(t[idx] for t in tensors)` of tensors that share their first dimension."""
    return IndexBatches(lambda idx: tuple(t[idx] for t in tensors), batch_size, sampler, **kwargs)
