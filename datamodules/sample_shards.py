"""What every prepare of samples as LitData shards shares (texts, FASTA records, translation pairs): a plan kept
beside the output, parts written by worker processes and renamed into place when complete, their merge into one
index per split, and the dataset that DataLoader workers read a split through.

    <output>/<split>/parts/NNNNNN/     one part's samples of the split (a LitData dataset and lengths.npy),
                                       renamed from NNNNNN.partial when complete: a rerun skips it
    <output>/<split>/index.json        after the merge: LitData's index of all the parts' chunks, in part order
    <output>/<split>/lengths.npy       every sample's length (for bucketing), in position order

A kind's prepare scans its source once into a plan (where each part starts, each split's size, the tokenizer and
classes), writes it with `start_prepare`, encodes the parts not done yet with `encode_parts` (its `write_part(job)` uses
`PartWriter`), merges the splits and writes the manifest with `finish`.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from datamodules.image_shards import IN_PROGRESS, clear_prepared, gather_chunks, read_index, write_json
from datamodules.prepared import Manifest
from datamodules.splits import SPLITS
from datamodules.token_corpus import Progress, usable_cores, worker_pool
from packaged import sha256_of
from validation import ConfigError

# Per LitData chunk: about 2,000 samples of 128 tokens, so a shuffle window (16,384 samples) draws from about 8
# chunks anywhere in the source, even when it is sorted (by label, by date).
CHUNK_BYTES = 2**20


def part_folder(output: Path, split: str, number: int) -> Path:
    return output / split / "parts" / f"{number:06d}"


def part_done(output: Path, split: str, number: int) -> bool:
    return (output / split / "index.json").is_file() or part_folder(output, split, number).is_dir()


class PartWriter:
    """The samples of part `number` for the splits it has not written yet: `add` each sample of every split in
    order (those of splits already written are skipped), then `close` renames each split's part into place.
    A sample's "index" is its position in its split, from the plan's `first` (split -> the part's first)."""

    def __init__(self, output: Path, number: int, first: dict[str, int]) -> None:
        from litdata.streaming.writer import BinaryWriter

        self.output, self.number = output, number
        self.next = dict(first)  # split -> the index of its next sample
        self.pending = [split for split in SPLITS if not part_done(output, split, number)]
        self.writers: dict[str, Any] = {}
        self.lengths: dict[str, list[int]] = {split: [] for split in self.pending}
        for split in self.pending:
            partial = self.partial(split)
            shutil.rmtree(partial, ignore_errors=True)  # what a stopped run left of this part
            partial.parent.mkdir(parents=True, exist_ok=True)
            self.writers[split] = BinaryWriter(str(partial), chunk_bytes=CHUNK_BYTES)

    def partial(self, split: str) -> Path:
        return part_folder(self.output, split, self.number).with_suffix(".partial")

    def wanted(self, split: str) -> bool:
        """Whether this part's samples of `split` are still to be written (encode them only then)."""
        return split in self.writers

    def add(self, split: str, sample: dict[str, Any], length: int) -> None:
        index = self.next[split]
        self.next[split] += 1
        if split in self.writers:
            self.writers[split][len(self.lengths[split])] = {**sample, "index": index}
            self.lengths[split].append(length)

    def close(self) -> None:
        for split in self.pending:
            partial = self.partial(split)
            if self.lengths[split]:
                self.writers[split].done()
                self.writers[split].merge()
            else:
                partial.mkdir(parents=True, exist_ok=True)
            np.save(partial / "lengths.npy", np.asarray(self.lengths[split], np.int32))
            partial.replace(part_folder(self.output, split, self.number))  # complete: a rerun skips it


def merge_split(split_dir: Path) -> int:
    """Move the parts' chunks into `split_dir` (renamed chunk-P-N.bin) with one index.json over all of them and
    one lengths.npy, in part order; the split's samples come back. Safe to rerun after a stop."""
    parts = sorted(path for path in (split_dir / "parts").iterdir() if path.suffix != ".partial")
    chunks, config = gather_chunks(split_dir, parts)
    lengths = np.concatenate([np.load(part / "lengths.npy") for part in parts]).astype(np.int32)
    with (split_dir / ".lengths.npy.tmp").open("wb") as file:
        np.save(file, lengths)
    (split_dir / ".lengths.npy.tmp").replace(split_dir / "lengths.npy")
    write_json(split_dir / "index.json", {"chunks": chunks, "config": config})  # the split is complete
    shutil.rmtree(split_dir / "parts")
    return len(lengths)


def read_plan(output: Path, settings: dict[str, Any], name: str) -> dict[str, Any] | None:
    """The plan (file `name`) of an unfinished prepare with these settings (the marker says it is one), or None."""
    if not (output / IN_PROGRESS).is_file():
        return None
    try:
        plan = json.loads((output / name).read_text())
    except (OSError, ValueError):
        return None
    return plan if isinstance(plan, dict) and plan.get("settings") == settings else None


def start_prepare(output: Path, settings: dict[str, Any], plan: dict[str, Any], name: str) -> None:
    """Mark `output` as a prepare under way and keep its plan: from here on a rerun goes on from the parts."""
    if output.exists():
        clear_prepared(output)  # parts of a prepare whose plan is lost
    output.mkdir(parents=True, exist_ok=True)
    (output / IN_PROGRESS).write_text(json.dumps(settings))
    write_json(output / name, plan)


def encode_parts(
    output: Path,
    jobs: Sequence[tuple[Any, ...]],
    write_part: Callable[[Any], int],
    workers: int | None,
    say: Progress,
    initializer: Callable[..., None] | None = None,
    initargs: tuple[Any, ...] = (),
) -> None:
    """Run `write_part` over the jobs (a part's number third, its plan fourth, with its "bytes") whose parts are
    not all written, in `workers` processes, with a progress line; then merge every split."""
    todo = [job for job in jobs if not all(part_done(output, split, job[2]) for split in SPLITS)]
    with worker_pool(min(max(1, workers or usable_cores()), max(1, len(todo))), initializer, initargs) as imap:
        say.start("encoding", sum(job[3]["bytes"] for job in todo))
        for size in imap(write_part, todo):
            say.advance(size)
        say.finish()
    for split in SPLITS:
        if not (output / split / "index.json").is_file():
            merge_split(output / split)


def finish(output: Path, manifest: Manifest, plan_name: str) -> Manifest:
    """Write the manifest (the folder is then a dataset) and remove what only the prepare needed."""
    manifest.write(output)
    (output / plan_name).unlink()
    (output / IN_PROGRESS).unlink()
    return manifest


def split_digests(manifest: Manifest, split: str) -> dict[str, str]:
    """The digests of one split's files: file name -> sha256."""
    prefix = f"{split}/"
    return {name[len(prefix) :]: value for name, value in manifest.digests.items() if name.startswith(prefix)}


def split_lengths(folder: Path, digests: dict[str, str]) -> torch.Tensor:
    """A prepared split's lengths.npy (N,), its digest checked."""
    lengths = folder / "lengths.npy"
    if "lengths.npy" in digests and sha256_of(lengths) != digests["lengths.npy"]:
        raise ConfigError(f"{lengths} is damaged (not as prepared); restore it, or prepare the dataset again")
    return torch.from_numpy(np.load(lengths))


class ShardSamples(Dataset):
    """One split of prepared samples, read by DataLoader workers: (sample, epoch) pairs -> `item(sample, epoch)`
    of the stored sample (a dict). Each chunk's sha256 is checked as it is first read (`digests`: file name ->
    digest)."""

    def __init__(self, folder: Path, digests: dict[str, str] | None = None) -> None:
        self.folder = folder
        chunks = read_index(folder)
        self.chunks = [chunk["filename"] for chunk in chunks]
        self.chunk_sizes = [chunk["chunk_size"] for chunk in chunks]
        self.chunk_ends = np.cumsum(self.chunk_sizes)
        self.digests = digests or {}
        self.verified: set[int] = set()
        self.reader: Any = None  # litdata's StreamingDataset, opened in each worker on first use
        import litdata  # noqa: F401  # in the training process, for forked workers to inherit (see ShardImages)

    def __len__(self) -> int:
        return int(self.chunk_ends[-1]) if len(self.chunk_ends) else 0

    def item(self, sample: dict[str, Any], epoch: int) -> Any:
        raise NotImplementedError

    def open(self) -> Any:
        """litdata's reader of the split, opened in each worker on first use."""
        if self.reader is None:
            from litdata import StreamingDataset

            self.reader = StreamingDataset(str(self.folder))
        return self.reader

    def __getitem__(self, pair: tuple[int, int]) -> Any:
        index, epoch = pair
        chunk = int(np.searchsorted(self.chunk_ends, index, side="right"))
        if chunk not in self.verified:
            path = self.folder / self.chunks[chunk]
            expected = self.digests.get(path.name)
            if expected is not None and sha256_of(path) != expected:
                raise ConfigError(
                    f"shard {path} is damaged (not as prepared); restore it, or prepare the dataset again"
                )
            self.verified.add(chunk)
        try:
            sample = self.open()[index]
        except Exception as error:  # litdata reading a chunk it cannot make sense of
            raise ConfigError(f"sample {index} of {self.folder} cannot be read ({error}); prepare it again") from None
        return self.item(sample, epoch)

    def __getitems__(self, pairs: list[tuple[int, int]]) -> list[Any]:
        return [self[pair] for pair in pairs]
