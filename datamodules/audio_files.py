"""The user's recordings: class folders (Speech Commands' layout) or a CSV of (path, label), read with soundfile.

Layouts:  root/<class>/<clip>                  split by speaker (Speech Commands' `<speaker>_nohash_<n>.wav`)
                                               or by file, unless root/validation_list.txt and
                                               root/testing_list.txt name the val and test clips
          root/train/<class>/<clip>, optional root/val/... and root/test/...
          a .csv/.tsv/.jsonl with a path and a label column (paths relative to the file), an optional group
Folders starting with "_" or "." are not classes (Speech Commands' `_background_noise_`).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from datamodules.splits import group_split
from datamodules.text_sources import read_table
from validation import ConfigError, require

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".mp3", ".aiff", ".aif")
SPLIT_LISTS = {"val": "validation_list.txt", "test": "testing_list.txt"}  # Speech Commands' official split


@dataclass(frozen=True)
class Clip:
    """One labelled recording, before it is read: where it is, its class, the group it is split with (a
    speaker), and its split where the source fixes it ("val" or "test"; None: drawn by the datamodule among
    train and the splits the source does not fix)."""

    path: Path
    label: str
    group: str
    split: str | None
    where: str  # how to name it in a message: the path, or "file.csv line 7"


def is_class_folder(path: Path) -> bool:
    return path.is_dir() and not path.name.startswith(("_", "."))


def audio_files(folder: Path) -> list[Path]:
    """The recordings under a class folder, sorted (links to files followed, links to folders not entered)."""
    return [
        path
        for path in sorted(folder.rglob("*"))
        if path.suffix.lower() in AUDIO_EXTENSIONS and (path.is_file() or not path.exists())
    ]


def speaker(path: Path) -> str:
    """The speaker in Speech Commands' file names (`<speaker>_nohash_<n>.wav`), else the file itself."""
    name = path.name
    return name.split("_nohash_")[0] if "_nohash_" in name else str(path)


def folder_clips(root: Path) -> list[Clip]:
    if not root.exists():
        raise ConfigError(f"{root} does not exist; give a folder of class sub-folders or a CSV in --data.source")
    if (root / "train").is_dir():
        parts = {split: root / split for split in ("train", "val", "test") if (root / split).is_dir()}
    else:
        parts = {"": root}
    classes = sorted(entry.name for entry in parts.get("train", root).iterdir() if is_class_folder(entry))
    if len(classes) < 2:
        raise ConfigError(
            f"{parts.get('train', root)} needs one sub-folder of recordings per class (at least 2), found "
            f"{len(classes)}; arrange clips as <folder>/<class>/<clip>.wav"
        )
    listed = {
        split: paths for split, name in SPLIT_LISTS.items() if "" in parts and (paths := listed_paths(root / name))
    }
    clips = []
    for split, folder in parts.items():
        present = sorted(entry.name for entry in folder.iterdir() if is_class_folder(entry))
        if present != classes:
            raise ConfigError(
                f"the classes of {folder} ({', '.join(present)}) differ from those of the training folder "
                f"({', '.join(classes)}); give every split the same class sub-folders"
            )
        for label in classes:
            for path in audio_files(folder / label):
                relative = path.relative_to(root).as_posix()
                # val/ and test/ fix their clips' split, as the lists do; the rest are drawn from
                fixed = (
                    split
                    if split in ("val", "test")
                    else next((s for s, paths in listed.items() if relative in paths), None)
                )
                clips.append(Clip(path, label, speaker(path), fixed, str(path)))
    if not clips:
        raise ConfigError(f"no recordings found in {root}; supported types: {', '.join(AUDIO_EXTENSIONS)}")
    return clips


def listed_paths(path: Path) -> set[str]:
    """The clips a Speech Commands split list names (one relative path per line); empty without the file."""
    if not path.is_file():
        return set()
    return {line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()}


def table_clips(path: Path, path_column: str, label_column: str, group_column: str | None) -> list[Clip]:
    """The rows of a CSV/TSV/JSONL; relative paths are relative to the file's folder."""
    columns = [path_column, label_column] + ([group_column] if group_column else [])
    table = read_table(path, columns)
    clips = []
    for row, line in zip(table.rows, table.lines, strict=True):
        audio = Path(row[path_column].strip())
        audio = audio if audio.is_absolute() else path.parent / audio
        group = row[group_column].strip() if group_column else str(audio)
        clips.append(Clip(audio, row[label_column].strip(), group, None, f"{path} line {line} ({audio})"))
    return clips


def find_clips(source: Path, path_column: str, label_column: str, group_column: str | None) -> list[Clip]:
    if source.is_dir() or not source.suffix:
        return folder_clips(source)
    return table_clips(source, path_column, label_column, group_column)


class Unreadable(Exception):
    """A recording soundfile cannot decode (or one that is empty); the message says why."""


def read_audio(path: Path) -> tuple[np.ndarray, int]:
    """(samples,) float32 mono in [-1, 1] and the sample rate. Channels are averaged; values beyond full
    scale or not finite are refused (their scale is unknown), never clipped."""
    soundfile = require("soundfile", "reading recordings")
    if not path.is_file():  # libsndfile says only "System error." for these
        raise Unreadable("it is a folder, not a file" if path.is_dir() else "no such file: moved or deleted?")
    try:
        data, rate = soundfile.read(str(path), dtype="float32", always_2d=True)  # (frames, channels)
    except (soundfile.LibsndfileError, RuntimeError, OSError, ValueError) as error:
        raise Unreadable(str(error).replace(f"{path}: ", "").strip() or type(error).__name__) from None
    if len(data) == 0:
        raise Unreadable("it holds no samples")
    if not np.isfinite(data).all():
        raise ConfigError(f"{path} holds NaN or infinite samples; re-export it")
    peak = float(np.abs(data).max())
    if peak > 1.0 + 1e-6:  # floating-point files may exceed full scale; integer ones cannot
        raise ConfigError(f"{path} peaks at {peak:.3g}, beyond full scale (1.0); normalise it")
    return data.mean(axis=1), int(rate)


def header_rate(path: Path) -> int | None:
    """The sample rate in a file's header (None if it cannot be read), without decoding the audio."""
    soundfile = require("soundfile", "reading recordings")

    try:
        return int(soundfile.info(str(path)).samplerate)
    except (soundfile.LibsndfileError, RuntimeError, OSError, ValueError):
        return None


def resample(samples: np.ndarray, rate: int, target: int) -> np.ndarray:
    """Polyphase resampling (scipy's `resample_poly`, a Kaiser-windowed anti-aliasing filter)."""
    resample_poly = require("scipy.signal", "resampling recordings").resample_poly
    common = math.gcd(rate, target)
    return resample_poly(samples, target // common, rate // common).astype(np.float32)


def fit_length(samples: np.ndarray, length: int) -> np.ndarray:
    """Cut to `length` samples, or pad with silence at the end."""
    if len(samples) >= length:
        return samples[:length]
    return np.pad(samples, (0, length - len(samples)))


def assign_splits(clips: list[Clip], val_fraction: float, test_fraction: float, seed: int) -> list[str]:
    """Each clip's split: the source's own where it has one, else a seeded hash of the clip's group (speaker),
    among train and the splits the source leaves open."""
    fixed = {clip.split for clip in clips}
    val_fraction = 0.0 if "val" in fixed else val_fraction
    test_fraction = 0.0 if "test" in fixed else test_fraction
    drawn = group_split([clip.group for clip in clips], val_fraction, test_fraction, seed)
    return [clip.split or split for clip, split in zip(clips, drawn, strict=True)]


def training_classes(source: str, clips: list[Clip], assignment: list[str]) -> list[str]:
    """The labels of the training clips, sorted, once training has two or more and no label occurs only
    outside it."""
    classes = sorted({clip.label for clip, split in zip(clips, assignment, strict=True) if split == "train"})
    if len(classes) < 2:
        raise ConfigError(f"the training clips of {source} have {len(classes)} label(s); need 2 or more")
    unknown = sorted({clip.label for clip in clips} - set(classes))
    if unknown:
        raise ConfigError(f"labels {', '.join(unknown)} occur only outside the training split; merge or drop them")
    return classes


def first_rate(source: str, clips: list[Clip]) -> int:
    """The sample rate of the first recording whose header can be read: the rate clips are used at when none
    is given."""
    rate = next((rate for rate in (header_rate(clip.path) for clip in clips) if rate), None)
    if rate is None:
        raise ConfigError(f"no recording in {source} can be read; check the files")
    return rate


# How the options that fix a recording's mistakes are given: to a run, or to `experiments.prepare`.
RUN_OPTIONS = {
    "resample": "--data.resample true",
    "sample_rate": "--data.sample_rate",
    "skip": "--data.skip_unreadable true",
}
PREPARE_OPTIONS = {"resample": "--resample", "sample_rate": "--sample_rate", "skip": "--skip_unreadable"}


def decode_clip(
    clip: Clip, sample_rate: int, resample_others: bool, clip_samples: int, options: dict[str, str]
) -> np.ndarray:
    """A clip as training holds it: int16 (clip_samples,) at `sample_rate`, cut or padded with silence.
    Raises Unreadable for a file that cannot be decoded; a rate other than `sample_rate` is an error unless
    `resample_others`, whose message names the fix as `options` spell it (RUN_OPTIONS, PREPARE_OPTIONS)."""
    samples, rate = read_audio(clip.path)
    if rate != sample_rate:
        if not resample_others:
            raise ConfigError(
                f"{clip.where} is sampled at {rate} Hz, the others at {sample_rate} Hz; convert them all with "
                f"{options['resample']} (to {options['sample_rate']}, else the first file's rate)"
            )
        samples = resample(samples, rate, sample_rate)
    return to_int16(fit_length(samples, clip_samples))


def unreadable(clip: Clip, reason: Unreadable, options: dict[str, str]) -> ConfigError:
    """The error for a recording that cannot be decoded, when such files are not skipped."""
    return ConfigError(
        f"{clip.where} cannot be read as audio ({reason}); fix or remove it, or skip such files with {options['skip']}"
    )


def to_int16(samples: np.ndarray) -> np.ndarray:
    """float samples in [-1, 1] -> int16, exact for 16-bit recordings (v * 32768 is the integer they held)."""
    return np.round(np.clip(samples, -1.0, 32767 / 32768) * 32768).astype(np.int16)


def holds_audio(folder: Path, looked_at: int = 100) -> bool:
    """Whether the first class folder (of train/, where there is one) has a recording among its first
    `looked_at` entries: cheap enough to tell recordings from images before listing anything."""
    root = folder / "train" if (folder / "train").is_dir() else folder
    try:
        first = next(entry for entry in sorted(root.iterdir()) if is_class_folder(entry))
        with os.scandir(first) as entries:
            names = [entry.name for entry, _ in zip(entries, range(looked_at), strict=False)]
    except (StopIteration, OSError):
        return False
    return any(Path(name).suffix.lower() in AUDIO_EXTENSIONS for name in names)


def table_holds_audio(path: Path, path_column: str) -> bool:
    """Whether a CSV/TSV/JSONL's first row names a recording in `path_column` (read no further)."""
    from datamodules.text_shards import TableStream

    try:
        row = next(iter(TableStream(path, [path_column])))
    except (ConfigError, StopIteration, OSError):
        return False
    return Path(row.cells[path_column].strip()).suffix.lower() in AUDIO_EXTENSIONS
