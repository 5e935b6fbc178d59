"""Recordings as prepared shards (LitData chunks): decoded once in parallel, then streamed by DataLoader
workers with flat memory.

    <output>/firstlight.json           manifest (`datamodules.prepared`): classes, sample rate, clip length, the
                                       training clips' log-mel statistics and the settings that shaped the shards
    <output>/<split>/index.json        LitData's index of the split's chunks
    <output>/<split>/chunk-P-N.bin     samples {"waveform": int16 (clip_samples,), "label": class id, "index":
                                       the sample's position in its split}
    <output>/<split>/stats.json        the split's clips, the unreadable files skipped, per-mel-band sums

A clip is stored as the in-memory path holds it: decoded, mixed to mono, resampled, cut or padded to the clip
length, int16. That costs 1.47x the disk of FLAC, but reading it is a copy: decoding FLAC took 242 us a clip
against 3 us for the raw samples (60 espeak-ng clips of 1 s at 16 kHz, 68% of their raw size as FLAC; 2-core
AMD EPYC, shared), and a spectrogram CNN on a GPU takes thousands of clips a second. Batches leave the workers
as int16 waveforms, as in memory; the log-mels are computed on the device (`AudioDataModule.prepare_batch`).

The clips of a split are those the in-memory path holds (its catalogue and its split: fixed splits, split
lists, speaker groups), written in the order it holds them (a permutation seeded by `seed`), so every chunk is
a fair sample of its split. The workers also sum each mel band's log-mel values and squares over the training
clips (float64), merged into the exact mean and std of every training frame. Work is cut into parts of PART
clips, each written by one worker into a folder of its own and renamed into place when complete: a stopped
prepare, run again, redoes at most the parts in flight and writes the same bytes.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from datamodules.audio_files import (
    PREPARE_OPTIONS,
    Clip,
    Unreadable,
    assign_splits,
    decode_clip,
    find_clips,
    first_rate,
    training_classes,
    unreadable,
)
from datamodules.image_shards import IN_PROGRESS, claim_shard_folder, gather_chunks, write_json
from datamodules.prepared import Manifest, fingerprint
from datamodules.sample_shards import ShardSamples
from datamodules.spectrogram import LogMel
from datamodules.splits import SPLITS
from datamodules.streaming import SHUFFLE_WINDOW
from datamodules.token_corpus import usable_cores, worker_pool
from validation import ConfigError, check_range

KIND = "audio"
PART = 1_024  # clips per unit of work (and of resumption): 32 MB of 1 s clips at 16 kHz
CHUNK_BYTES = 16_000_000  # per LitData chunk: 500 clips of 1 s at 16 kHz
STATS_BATCH = 256  # clips whose log-mels a worker computes at once
# The spectrogram whose statistics a prepare records unless told otherwise: AudioDataModule's defaults.
FEATURES: dict[str, Any] = {"n_mels": 40, "window_ms": 25.0, "hop_ms": 10.0, "f_min": 20.0, "f_max": None}
# What shaped the shards, recorded in the manifest; a datamodule with other values is refused (the columns only
# for a table). The resolved sample rate is recorded as "sample_rate".
SHARD_SETTINGS = (
    "path_column",
    "label_column",
    "group_column",
    "resample",
    "clip_seconds",
    "val_fraction",
    "test_fraction",
    "seed",
)
COLUMNS = ("path_column", "label_column", "group_column")


def clip_length(clip_seconds: float, rate: int) -> int:
    return max(1, round(clip_seconds * rate))


def log_mel_of(rate: int, clip_seconds: float, features: dict[str, Any]) -> LogMel:
    """The log-mel transform of these spectrogram settings (`FEATURES`' names), refused in one line where the
    rate or the clip length cannot hold them."""
    n_fft = max(2, round(features["window_ms"] * rate / 1000))
    hop = max(1, round(features["hop_ms"] * rate / 1000))
    f_min, f_max = features["f_min"], rate / 2 if features["f_max"] is None else features["f_max"]
    if not f_min < f_max <= rate / 2:
        raise ConfigError(
            f"the mel bands need f_min < f_max <= {rate / 2:g} Hz (half the sample rate), "
            f"got f_min {f_min:g} and f_max {f_max:g}"
        )
    if clip_length(clip_seconds, rate) // hop < 1:
        raise ConfigError(f"clip_seconds {clip_seconds} is shorter than one hop of {features['hop_ms']} ms")
    return LogMel(rate, n_fft, hop, features["n_mels"], f_min, f_max)


def to_float(waveforms: torch.Tensor) -> torch.Tensor:
    return waveforms.float() / 32768  # int16 -> [-1, 1)


# -- preparing ------------------------------------------------------------------------------------------------


def list_clips(source: Path, settings: dict[str, Any]) -> tuple[dict[str, list[tuple[Clip, int, int]]], list[str], int]:
    """split -> (clip, class id, position) in the order the in-memory path holds them, the classes and the
    sample rate; every mistake the listing can show is raised here, before anything is written."""
    s = settings
    clips = find_clips(source, s["path_column"], s["label_column"], s["group_column"])
    assignment = assign_splits(clips, s["val_fraction"], s["test_fraction"], s["seed"])
    classes = training_classes(str(source), clips, assignment)
    rate = s["sample_rate"] or first_rate(str(source), clips)
    label_ids = {name: index for index, name in enumerate(classes)}
    splits = {}
    for split in SPLITS:
        members = [clip for clip, assigned in zip(clips, assignment, strict=True) if assigned == split]
        if not members:
            raise ConfigError(f"the {split} split of {source} has no clips; use more recordings or larger fractions")
        order = torch.randperm(len(members), generator=torch.Generator().manual_seed(s["seed"])).tolist()
        splits[split] = [(members[i], label_ids[members[i].label], position) for position, i in enumerate(order)]
    return splits, classes, rate


def write_part(task: tuple[str, list[tuple[Clip, int, int]], dict[str, Any]]) -> dict[str, Any]:
    """Decode one part's clips into a LitData dataset in `folder`, renamed into place when complete; its
    clips, the files skipped as unreadable and (for training clips) per-mel-band sums come back."""
    from litdata.streaming.writer import BinaryWriter

    folder, items, job = task  # job: rate, clip_samples, statistics (bool), features, settings, options
    partial = Path(f"{folder}.partial")
    shutil.rmtree(partial, ignore_errors=True)  # what a stopped run left of this part
    writer = BinaryWriter(str(partial), chunk_bytes=CHUNK_BYTES)
    settings, options = job["settings"], job["options"]
    # One thread, before any torch operation: the same sums whichever process computes them, no oversubscription,
    # and no OpenMP team in a process forked from one that ran one (its threads are not there: it would wait for
    # them forever), as in torch's own DataLoader workers.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        log_mel = log_mel_of(job["rate"], settings["clip_seconds"], job["features"]) if job["statistics"] else None
        n_mels = job["features"]["n_mels"]
        sums, squares = torch.zeros(n_mels, dtype=torch.float64), torch.zeros(n_mels, dtype=torch.float64)
        frames, written = 0, 0
        batch: list[np.ndarray] = []
        skipped: list[str] = []
        for position, (clip, label, index) in enumerate(items):
            try:
                samples = decode_clip(clip, job["rate"], settings["resample"], job["clip_samples"], options)
                writer[written] = {"waveform": samples, "label": label, "index": index}
                written += 1
                batch += [samples] if log_mel is not None else []
            except Unreadable as reason:
                if not settings["skip_unreadable"]:
                    raise unreadable(clip, reason, options) from None
                skipped.append(f"{clip.where}: {reason}")
            if log_mel is not None and batch and (len(batch) == STATS_BATCH or position == len(items) - 1):
                features = log_mel(to_float(torch.from_numpy(np.stack(batch)))).double()  # (B, n_mels, T)
                sums += features.sum(dim=(0, 2))
                squares += features.square().sum(dim=(0, 2))
                frames += features.shape[0] * features.shape[2]
                batch = []
    finally:
        torch.set_num_threads(threads)
    if written:
        writer.done()
        writer.merge()
    else:
        partial.mkdir(parents=True, exist_ok=True)
    result = {"count": written, "skipped": skipped, "sums": sums.tolist(), "squares": squares.tolist()}
    write_json(partial / "part.json", result | {"frames": frames})
    partial.replace(folder)  # complete: a rerun skips it
    return result | {"frames": frames}


def merge_split(split_dir: Path) -> None:
    """Move the parts' chunks into `split_dir` (renamed chunk-P-N.bin) with one index.json over all of them, in
    part order, and sum the parts' results into stats.json. Safe to rerun after a stop."""
    parts = sorted(path for path in (split_dir / "parts").iterdir() if path.suffix != ".partial")
    results = [json.loads((part / "part.json").read_text()) for part in parts]
    chunks, config = gather_chunks(split_dir, parts)
    if config is None:
        raise ConfigError(f"no readable recordings for the {split_dir.name} split; check the source")
    stats = {
        "count": sum(chunk["chunk_size"] for chunk in chunks),
        "skipped": [line for result in results for line in result["skipped"]],
        "sums": np.sum([r["sums"] for r in results], axis=0).tolist(),
        "squares": np.sum([r["squares"] for r in results], axis=0).tolist(),
        "frames": sum(r["frames"] for r in results),
    }
    write_json(split_dir / "stats.json", stats)
    write_json(split_dir / "index.json", {"chunks": chunks, "config": config})  # the split is complete
    shutil.rmtree(split_dir / "parts")


def statistics(stats: dict[str, Any]) -> tuple[list[float], list[float]]:
    """Per mel band, the mean and std (as torch.std, unbiased; at least 1e-3, as the in-memory path clamps it)
    of every training frame's log-mel value, from the merged sums."""
    count = stats["frames"]
    mean = np.array(stats["sums"]) / count
    variance = np.maximum(np.array(stats["squares"]) - count * mean**2, 0) / max(1, count - 1)
    return mean.tolist(), np.maximum(np.sqrt(variance), 1e-3).tolist()


def prepare_audio(
    source: Path,
    output: Path,
    *,
    path_column: str = "path",
    label_column: str = "label",
    group_column: str | None = None,
    sample_rate: int | None = None,
    resample: bool = False,
    clip_seconds: float = 1.0,
    val_fraction: float = 0.1,
    test_fraction: float = 0.1,
    seed: int = 0,
    skip_unreadable: bool = False,
    features: dict[str, Any] | None = None,
    workers: int | None = None,
    overwrite: bool = False,
    progress: bool = True,
    options: dict[str, str] = PREPARE_OPTIONS,
    part_clips: int = PART,
) -> Manifest:
    """Prepare recordings (class folders or a CSV/TSV/JSONL of path and label, `audio_files`' layouts) as
    shards in `output`, in `workers` processes; resumable (see the module's docstring). The arguments are
    `AudioDataModule`'s; `features` (FEATURES' names) is the spectrogram whose statistics are recorded, and
    `options` how messages name the options that fix a recording's mistakes; `part_clips` the clips of a unit
    of work. Returns the manifest written."""
    source, output = Path(source).resolve(), Path(output).resolve()
    check_range("clip_seconds", clip_seconds, 0.0, low_open=True)
    check_range("val_fraction", val_fraction, 0.0, 0.5, low_open=True)
    check_range("test_fraction", test_fraction, 0.0, 0.5, low_open=True)
    if sample_rate is not None:
        check_range("sample_rate", sample_rate, 1)
    check_range("part_clips", part_clips, 1)
    if not source.exists():
        raise ConfigError(f"{source} does not exist; give a folder of class sub-folders of recordings or a CSV")
    features = FEATURES | (features or {})
    settings: dict[str, Any] = {
        "kind": KIND,
        "source": str(source),
        "fingerprint": fingerprint(source),
        "path_column": path_column,
        "label_column": label_column,
        "group_column": group_column,
        "sample_rate": sample_rate,
        "resample": resample,
        "clip_seconds": clip_seconds,
        "val_fraction": val_fraction,
        "test_fraction": test_fraction,
        "seed": seed,
        "skip_unreadable": skip_unreadable,
        "features": features,
        "part_clips": part_clips,
    }
    claim_shard_folder(output, settings, overwrite)
    splits, classes, rate = list_clips(source, settings)  # nothing is written before the listing is checked
    clip_samples = clip_length(clip_seconds, rate)
    log_mel_of(rate, clip_seconds, features)  # the spectrogram settings, checked before any work
    output.mkdir(parents=True, exist_ok=True)
    (output / IN_PROGRESS).write_text(json.dumps(settings))
    job = {"rate": rate, "clip_samples": clip_samples, "features": features, "settings": settings, "options": options}
    tasks = []
    for split, items in splits.items():
        if (output / split / "index.json").is_file():  # merged by an earlier run
            continue
        for number, start in enumerate(range(0, len(items), part_clips)):
            folder = output / split / "parts" / f"{number:06d}"
            if not folder.is_dir():
                (output / split / "parts").mkdir(parents=True, exist_ok=True)
                part = items[start : start + part_clips]
                tasks.append((str(folder), part, job | {"statistics": split == "train"}))
    total = sum(len(items) for items in splits.values())
    done = total - sum(len(task[1]) for task in tasks)
    first, started = done, time.perf_counter()
    with worker_pool(min(max(1, workers or usable_cores()), max(1, len(tasks))), None, ()) as imap:
        for _, task in zip(imap(write_part, tasks), tasks, strict=True):
            done += len(task[1])
            if progress and (sys.stderr.isatty() or done == total):  # elsewhere (a log file) only the end
                speed = (done - first) / max(1e-9, time.perf_counter() - started)
                print(f"\rprepare: {done:,}/{total:,} clips ({speed:,.0f}/s)", end="", file=sys.stderr, flush=True)
    if progress and tasks:
        print(file=sys.stderr)  # the progress line ends
    stats = {}
    for split in SPLITS:
        if not (output / split / "index.json").is_file():
            merge_split(output / split)
        stats[split] = json.loads((output / split / "stats.json").read_text())
    skipped = [line for split in SPLITS for line in stats[split]["skipped"]]
    for line in skipped[:20]:
        warnings.warn(f"skipping unreadable recording {line}", stacklevel=2)
    if len(skipped) > 20:
        warnings.warn(f"... and {len(skipped) - 20} more unreadable recordings skipped", stacklevel=2)
    mean, std = statistics(stats["train"])
    manifest = Manifest(
        kind=KIND,
        source=str(source),
        fingerprint=settings["fingerprint"],
        splits={split: stats[split]["count"] for split in SPLITS},
        state={"classes": classes, "sample_rate": rate, "mean": mean, "std": std},
        settings={name: settings[name] for name in SHARD_SETTINGS}
        | {"sample_rate": rate, "clip_samples": clip_samples, "features": features, "table": source.is_file()}
        | {"skipped": len(skipped)},
    )
    manifest.write(output)
    (output / IN_PROGRESS).unlink()
    return manifest


# -- reading --------------------------------------------------------------------------------------------------


class ShardAudio(ShardSamples):
    """One split of prepared clips, read by DataLoader workers: (sample, epoch) pairs -> (int16 waveform
    (clip_samples,), label, sample id). Each chunk's sha256 is checked as it is first read (`digests`: file
    name -> digest)."""

    def open(self) -> Any:
        if self.reader is None:
            from litdata import StreamingDataset

            # As ShardImages: a shuffle window's chunks kept mapped, one sample decoded per index.
            window_chunks = min(len(self.chunk_sizes), SHUFFLE_WINDOW // max(1, min(self.chunk_sizes)) + 2)
            self.reader = StreamingDataset(str(self.folder), max_pre_download=window_chunks, batch_decode=0)
        return self.reader

    def item(self, sample: dict[str, Any], epoch: int) -> tuple[torch.Tensor, int, int]:
        try:
            waveform = torch.from_numpy(np.asarray(sample["waveform"], dtype=np.int16).copy())
        except Exception as error:  # a sample of another layout
            raise ConfigError(f"a sample of {self.folder} cannot be read ({error}); prepare it again") from None
        return waveform, int(sample["label"]), int(sample["index"])


def collate(samples: list[tuple[torch.Tensor, int, int]]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """-> int16 waveforms (B, clip_samples), labels (B,), sample ids (B,)."""
    waveforms, labels, ids = zip(*samples, strict=True)
    return torch.stack(waveforms), torch.tensor(labels), torch.tensor(ids)
