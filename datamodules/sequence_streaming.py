"""How a sequence datamodule (texts, FASTA records, translation pairs) reads either form of its data: a file held
in memory, or shards prepared from it (`python -m experiments.prepare`) streamed by DataLoader workers.

`StreamsPreparedSequences` decides which (`loading`: auto, memory or streaming), prepares a file chosen for
streaming into the cache once, opens a prepared folder (its tokenizer and classes, refusing settings it was not
prepared with) and gives the streamed loaders: each rank its own part of an epoch, every sample once, batches of
similar lengths padded as in memory, resumable mid-epoch. A datamodule supplies what differs by kind (the
hooks below the `shards` property).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import sys
from collections.abc import Callable
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

import torch

from datamodules.batches import batches_done
from datamodules.cache import cache_dir
from datamodules.image_shards import IN_PROGRESS, chunk_sizes
from datamodules.prepared import MANIFEST, Manifest, fingerprint, is_prepared, read_manifest
from datamodules.sample_shards import ShardSamples, split_digests, split_lengths
from datamodules.sequence_base import pad
from datamodules.splits import SPLITS
from datamodules.streaming import (
    ChunkedOrder,
    StreamingBatches,
    StreamsWhenPrepared,
    available_memory,
    default_workers,
    fits_in_memory,
    memory_note,
    processes_per_machine,
    streaming_reason,
)
from datamodules.text_shards import BucketedOrder
from validation import ConfigError

Loading = Literal["auto", "memory", "streaming"]


class PadBatch:
    """The DataLoader's collate: [(ids (T,), label)] -> (ids (B, longest) padded with `pad_id`, labels (B,))."""

    def __init__(self, pad_id: int) -> None:
        self.pad_id = pad_id

    def __call__(self, samples: list[tuple[torch.Tensor, int]]) -> tuple[torch.Tensor, torch.Tensor]:
        tokens, labels = zip(*samples, strict=True)
        return pad(list(tokens), self.pad_id), torch.tensor(labels)


class StreamsPreparedSequences(StreamsWhenPrepared):
    """The `shards` of a `SequenceDataModule` with `source`, `loading` and `workers` arguments (see the module's
    docstring); `build` calls `open_prepared(self.shards)` when they are not None."""

    hparams: Any
    trainer: Any
    seed: int
    bucket: bool
    splits: dict[str, Any]
    lengths: dict[str, torch.Tensor]
    prepared_kind: str  # the manifest's kind, as `experiments.prepare --kind` names it
    in_memory_overhead: float  # peak memory of the in-memory path per byte of the source
    shard_settings: tuple[str, ...]  # arguments (hparams) of the prepare that shape the shards
    raw_source: str  # what a source that is not prepared is, for messages: "a CSV, TSV or JSON Lines file"
    loading_reason = ""

    # What differs by kind.
    def built_in(self) -> str | None:
        """Why the source is held in memory whatever `loading` says (a built-in dataset), or None for a path."""
        raise NotImplementedError

    def raw_size(self, path: Path) -> int:
        """Bytes of a raw source (a one-line error for a folder that is neither a source nor prepared)."""
        if path.is_dir():
            raise ConfigError(
                f"{path} is a folder without {MANIFEST}: give {self.raw_source}, or a folder prepared from one with "
                f"python -m experiments.prepare FILE DIR --kind {self.prepared_kind}"
            )
        return path.stat().st_size

    def memory_only(self) -> tuple[str, str] | None:
        """(why, how to stream instead) when these settings hold a raw source in memory whatever its size."""
        return None

    def refuse_prepared(self, folder: Path) -> None:
        """Refuse settings a prepared folder cannot stream with (one line)."""

    def checked_settings(self, settings: dict[str, Any]) -> tuple[str, ...]:
        """Which of `settings` (the run's or a folder's) must be the same to train on a prepared folder."""
        raise NotImplementedError

    def prepare_shards(self, source: Path, output: Path, **settings: Any) -> Manifest:
        raise NotImplementedError

    def open_state(self, manifest: Manifest) -> None:
        """Take the tokenizer (and classes) of a prepared folder."""
        raise NotImplementedError

    def shard_split(self, split: str, folder: Path, digests: dict[str, str]) -> ShardSamples:
        raise NotImplementedError

    def collate(self) -> Callable[[Any], Any]:
        raise NotImplementedError

    # The same for every kind.
    @cached_property
    def shards(self) -> Path | None:
        """The prepared folder to stream from, or None to hold the data in memory (see `loading`); a source
        chosen for streaming is prepared into the cache here, once."""
        hp = self.hparams
        loading = hp["loading"]
        built_in = self.built_in()
        if built_in is not None:
            if loading == "streaming":
                raise ConfigError(f"{hp['source']} is held in memory; --data.loading streaming takes a file of yours")
            self.loading_reason = built_in
            return None
        path = Path(hp["source"])
        if path.is_dir() and (is_prepared(path) or (path / IN_PROGRESS).is_file()):  # else: read_manifest says why
            if loading == "memory":
                raise ConfigError(f"{path} is a prepared dataset, which streams; leave out --data.loading")
            self.refuse_prepared(path)
            self.loading_reason = "streaming: a prepared folder"
            return path
        if not path.exists():  # the in-memory reader says so
            self.loading_reason = "in memory"
            return None
        raw_size = self.raw_size(path)
        if loading == "memory":
            self.loading_reason = "in memory"
            return None
        needed, per_process = self.in_memory_overhead * raw_size, available_memory() // processes_per_machine()
        size = memory_note(needed, per_process)
        memory_only = self.memory_only()
        if loading == "auto" and memory_only:
            self.loading_reason = f"in memory: {memory_only[0]} ({size})"
            return None
        if loading == "auto" and fits_in_memory(needed, per_process):
            self.loading_reason = f"in memory: {size}"
            return None
        if memory_only:
            raise ConfigError(f"{memory_only[0]}; {memory_only[1]}, or use --data.loading memory")
        self.loading_reason = streaming_reason(loading, needed, per_process)
        return self.prepared_in_cache(path)

    def prepare_settings(self) -> dict[str, Any]:
        """The arguments of the prepare that shape the shards, as this datamodule's."""
        return {name: self.hparams[name] for name in self.shard_settings}

    def prepared_in_cache(self, path: Path) -> Path:
        """The cache's prepared copy of the source `path` for these settings, made on first use (one process
        prepares while the others of the machine wait for it)."""
        settings = self.prepare_settings()
        key = json.dumps([str(path.resolve()), fingerprint(path), settings], sort_keys=True)
        target = cache_dir() / "prepared" / f"{path.stem}-{hashlib.sha256(key.encode()).hexdigest()[:12]}"
        target.parent.mkdir(parents=True, exist_ok=True)
        with open(target.with_suffix(".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not is_prepared(target):
                print(f"preparing {path} as shards in {target} (once)", file=sys.stderr, flush=True)
                self.prepare_shards(path, target, **settings, workers=default_workers(None))
        return target

    def open_prepared(self, folder: Path) -> None:
        """Take the tokenizer, classes and splits of a prepared folder, refusing settings it was not prepared
        with (the run's config would then say what it did not train on)."""
        hp = self.hparams
        manifest = read_manifest(folder, self.prepared_kind)
        prepared = manifest.settings
        names = self.checked_settings(dict(hp))
        differ = [f"--data.{name} {hp[name]}" for name in names if prepared.get(name) != hp[name]]
        if differ:
            was = ", ".join(f"{name} {prepared.get(name)}" for name in self.checked_settings(prepared))
            raise ConfigError(
                f"{folder} was prepared with {was}, not {', '.join(differ)}: give its settings, or prepare the "
                "source again with yours"
            )
        self.open_state(manifest)
        for split in SPLITS:
            digests = split_digests(manifest, split)
            self.splits[split] = self.shard_split(split, folder / split, digests)
            self.lengths[split] = split_lengths(folder / split, digests)

    def prepared_dataset(self) -> Path | None:
        return self.shards

    def loading_note(self) -> str:
        shards = self.shards
        if shards is None:
            return f"data: {self.loading_reason}"
        return f"data: {self.loading_reason}; from {shards}, {self.workers()} DataLoader worker(s) per process"

    def workers(self) -> int:
        given = self.hparams["workers"]
        return default_workers(self.trainer) if given is None else given

    def streaming_loader(self, split: str, batch_size: int, training: bool) -> StreamingBatches:
        """Batches of the split's shards, collated as in memory, fetched by DataLoader workers."""
        self.ready()  # type: ignore[attr-defined]
        dataset: ShardSamples = self.splits[split]
        trainer = self.trainer
        rank, world_size = (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)
        sizes = chunk_sizes(dataset.folder)
        options: dict[str, Any] = {"shuffle": training, "equal_batches": training, "seed": self.seed}
        options |= {"rank": rank, "world_size": world_size}
        order = (
            BucketedOrder(sizes, batch_size, self.lengths[split], **options)
            if self.bucket
            else ChunkedOrder(sizes, batch_size, **options)
        )
        loader = StreamingBatches(dataset, order, self.collate(), self.workers())
        if training:
            loader.progress = batches_done(trainer)  # resumable mid-epoch
        return loader
