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
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from datamodules.text_sources import read_table
from validation import ConfigError

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
    import soundfile

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
    import soundfile

    try:
        return int(soundfile.info(str(path)).samplerate)
    except (soundfile.LibsndfileError, RuntimeError, OSError, ValueError):
        return None


def resample(samples: np.ndarray, rate: int, target: int) -> np.ndarray:
    """Polyphase resampling (scipy's `resample_poly`, a Kaiser-windowed anti-aliasing filter)."""
    from scipy.signal import resample_poly

    common = math.gcd(rate, target)
    return resample_poly(samples, target // common, rate // common).astype(np.float32)


def fit_length(samples: np.ndarray, length: int) -> np.ndarray:
    """Cut to `length` samples, or pad with silence at the end."""
    if len(samples) >= length:
        return samples[:length]
    return np.pad(samples, (0, length - len(samples)))
