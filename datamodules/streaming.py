"""Batches streamed from prepared shards: an epoch order that reads its chunks in runs, each rank its own part,
every sample once, fetched and decoded in DataLoader workers, resumable mid-epoch.

`ChunkedOrder` decides which samples each batch of an epoch holds (in the main process, a few integers per
sample); `StreamingBatches` hands those index lists to a `DataLoader` whose workers read and decode them.
Lightning sees an iterable with a length, a `sampler` whose epoch it sets, and `state_dict`: the batches of
the running epoch that training has finished. A resumed run skips exactly those.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from validation import ConfigError

# Samples shuffled together: the chunks are visited in a random order and the samples of each run of
# consecutive chunks of this many samples are mixed, so a worker reads from a few chunks at a time (they
# were written in a random order of the files, so each chunk is already a sample of the whole dataset).
SHUFFLE_WINDOW = 16_384


class ChunkedOrder:
    """The samples of one rank's epoch, in batches.

    The dataset is a sequence of chunks of `chunk_sizes` samples (global indices run on from one chunk to the
    next). With `shuffle`, an epoch visits the chunks in a permutation drawn from `seed + epoch` and mixes
    the samples within windows of `window` samples; without, in stored order. Rank r of w takes the r-th of
    w contiguous parts of that order: ranks read disjoint chunks, and together every sample of the epoch once.

    Training batches (`equal_batches`) are of `batch_size`, except the last of each rank, which takes the
    rank's remainder (up to 2 * batch_size): every rank then has the same number of batches, which DDP needs,
    and no sample is dropped or repeated. Evaluation batches are consecutive slices, the last one short.
    """

    def __init__(
        self,
        chunk_sizes: Sequence[int],
        batch_size: int,
        *,
        shuffle: bool,
        equal_batches: bool,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        window: int = SHUFFLE_WINDOW,
    ) -> None:
        self.chunk_starts: list[int] = torch.tensor([0, *chunk_sizes]).cumsum(0).tolist()  # (chunks + 1,)
        self.num_samples = self.chunk_starts[-1]
        if self.num_samples < world_size:
            raise ConfigError(f"{self.num_samples} samples cannot be shared by {world_size} processes; use fewer")
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.equal_batches = equal_batches
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.window = window
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def generator(self) -> torch.Generator:
        return torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)

    def epoch_order(self) -> torch.Tensor:
        """All samples of the epoch, in the order the ranks share out. (N,) int64."""
        if not self.shuffle:
            return torch.arange(self.num_samples)
        generator = self.generator()
        chunks = torch.randperm(len(self.chunk_starts) - 1, generator=generator)
        order = torch.cat([torch.arange(self.chunk_starts[c], self.chunk_starts[c + 1]) for c in chunks.tolist()])
        for start in range(0, len(order), self.window):
            part = order[start : start + self.window]
            order[start : start + self.window] = part[torch.randperm(len(part), generator=generator)]
        return order

    def rank_part(self) -> tuple[int, int]:
        """[start, stop) of this rank's part of the epoch order."""
        return self.rank * self.num_samples // self.world_size, (self.rank + 1) * self.num_samples // self.world_size

    def __len__(self) -> int:
        if self.equal_batches:  # the smallest rank's count decides, for every rank
            return max(1, (self.num_samples // self.world_size) // self.batch_size)
        start, stop = self.rank_part()
        return -(-(stop - start) // self.batch_size)

    def batches(self) -> list[torch.Tensor]:
        start, stop = self.rank_part()
        mine = self.epoch_order()[start:stop]
        if self.equal_batches:
            cut = (len(self) - 1) * self.batch_size  # full batches, then the remainder as the last one
            batches = [*(mine[:cut].split(self.batch_size) if cut else []), mine[cut:]]
        else:
            batches = list(mine.split(self.batch_size))
        # Each batch's samples in stored order: a worker then reads its chunks one after another, not
        # jumping between them sample by sample (the batch holds the same samples either way).
        return [batch.sort().values for batch in batches]


class EpochIndices:
    """The `batch_sampler` of the DataLoader: the running epoch's batches, from `skip` on, as lists of
    (sample, epoch) pairs (the workers seed each sample's augmentation from both)."""

    def __init__(self, order: ChunkedOrder) -> None:
        self.order = order
        self.skip = 0

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        epoch = self.order.epoch
        for batch in self.order.batches()[self.skip :]:
            yield [(index, epoch) for index in batch.tolist()]

    def __len__(self) -> int:
        return len(self.order) - self.skip


class StreamingBatches:
    """An iterable of batches that DataLoader workers fetch from `dataset` (a map-style dataset of (sample,
    epoch) pairs with `__getitems__`), in `order`. Lightning treats it as it treats a DataLoader: it has a
    length and a `sampler` whose epoch it sets. Resumable mid-epoch like `batches.IndexBatches`."""

    batch_sampler = None  # Lightning looks for the attribute; it injects no sampler into this iterable

    def __init__(self, dataset: Dataset, order: ChunkedOrder, collate: Callable[[Any], Any], workers: int) -> None:
        self.sampler = order
        self.indices = EpochIndices(order)
        self.progress: Callable[[], int] | None = None  # batches of this epoch done, as the trainer counts
        self.resume_at: dict[str, int] | None = None
        self.loader = DataLoader(
            dataset,
            batch_sampler=self.indices,
            num_workers=workers,
            collate_fn=collate,
            persistent_workers=workers > 0,  # started once, not every epoch
            prefetch_factor=4 if workers > 0 else None,
            # The workers' base seed from a generator of its own: drawn from the global one, it would shift
            # the training process's random stream (dropout) whenever a loader starts, and a resumed run's
            # loaders start at other points than an uninterrupted run's. Samples are seeded by `dataset`.
            generator=torch.Generator().manual_seed(0),
        )

    def __len__(self) -> int:
        return len(self.sampler)

    def __iter__(self) -> Iterator[Any]:
        # A generator: nothing happens until the first batch is asked for. Lightning calls `iter` once just to
        # check that the loader is iterable, before it sets the epoch and the state to resume from.
        self.indices.skip = 0
        if self.resume_at is not None:
            if self.resume_at["epoch"] == self.sampler.epoch:
                self.indices.skip = self.resume_at["batches_done"]
            self.resume_at = None
        try:
            yield from self.loader
        except ConfigError as error:  # raised in a worker: its message carries the worker's traceback
            raise ConfigError(str(error).strip().splitlines()[-1].removeprefix("validation.ConfigError: ")) from None

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.sampler.epoch, "batches_done": self.progress() if self.progress else 0}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.resume_at = dict(state)


class StreamsWhenPrepared:
    """Loaders for a datamodule that holds small data in memory (its base class's loaders) and streams
    prepared shards (its `streaming_loader(split, batch_size, training)`) when `shards` names a folder.
    Evaluation batches are `eval_batch_factor` times the training batch size, as in memory."""

    shards: Any
    batch_size: int
    eval_batch_factor = 2

    def streaming_loader(self, split: str, batch_size: int, training: bool) -> StreamingBatches:
        raise NotImplementedError

    def train_dataloader(self) -> Any:
        if self.shards is None:
            return super().train_dataloader()  # type: ignore[misc]
        return self.streaming_loader("train", self.batch_size, training=True)

    def val_dataloader(self) -> Any:
        if self.shards is None:
            return super().val_dataloader()  # type: ignore[misc]
        return self.streaming_loader("val", self.eval_batch_factor * self.batch_size, training=False)

    def test_dataloader(self) -> Any:
        if self.shards is None:
            return super().test_dataloader()  # type: ignore[misc]
        return self.streaming_loader("test", self.eval_batch_factor * self.batch_size, training=False)


MEMORY_SHARE = 0.5  # a raw source streams when its in-memory path would need more of each process's memory


def fits_in_memory(needed: float, per_process: int) -> bool:
    """Whether a source whose in-memory path peaks at `needed` bytes is held in memory by `loading auto`."""
    return needed <= MEMORY_SHARE * per_process


def memory_note(needed: float, per_process: int) -> str:
    return f"about {needed / 2**30:.1f} GB of {per_process / 2**30:.1f} GB available"


def streaming_reason(loading: str, needed: float, per_process: int) -> str:
    """The start note's reason for streaming a raw source: asked for, or too big for memory."""
    if loading == "streaming":
        return "streaming: --data.loading streaming"
    return (
        f"streaming: in memory it would take about {needed / 2**30:.1f} GB, more than half of the "
        f"{per_process / 2**30:.1f} GB available to each process"
    )


def processes_per_machine() -> int:
    """Training processes that share this machine: as a launcher says (torchrun, SLURM), else one per GPU."""
    for name in ("LOCAL_WORLD_SIZE", "SLURM_NTASKS_PER_NODE"):
        if os.environ.get(name, "").isdigit():
            return max(1, int(os.environ[name]))
    return max(1, torch.cuda.device_count()) if torch.cuda.is_available() else 1


def default_workers(trainer: Any) -> int:
    """DataLoader workers per process when none are given: the CPUs this process may use, shared by the
    processes of this machine, at most 8 (decoding scales with cores; more workers only hold more memory)."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    local_processes = getattr(trainer, "num_devices", None) or processes_per_machine()
    return max(1, min(8, cpus // max(1, local_processes)))


def available_memory() -> int:
    """Bytes of memory this process can still have: the machine's MemAvailable, or less where a cgroup (a
    SLURM job's, a container's) limits it; the physical total where neither is known."""
    available = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    available = int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        with open("/sys/fs/cgroup/memory.max") as limit, open("/sys/fs/cgroup/memory.current") as used:
            text = limit.read().strip()
            if text != "max":
                available = min(available, int(text) - int(used.read()))
    except (OSError, ValueError):
        pass
    return available
