"""Prepared datasets: a folder of shards written by `python -m experiments.prepare`, described by its manifest.

    <folder>/firstlight.json    the manifest: kind, source and its fingerprint, splits and their sizes, and
                                what training and `predict` need beyond the samples (classes, statistics,
                                tokenizer), so the source is never read again
    <folder>/<split>/...        the split's shards (LitData chunks and index.json; token ids for a corpus)

The manifest is written last, after every shard is complete: a folder without one is a prepare that did not
finish (run the same command again to go on), never a dataset. Reading checks the manifest's version, that
every shard it names is there with its recorded size, and (when the source is still there) that the source
has not changed since.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from packaged import sha256_of
from validation import ConfigError

MANIFEST = "firstlight.json"
FORMAT_VERSION = 1  # of the layout and manifest; a prepared folder of another version is refused
FINGERPRINT_SAMPLE = 2_000  # files whose size and mtime the fingerprint hashes, spread over the sorted list


@dataclass
class Manifest:
    kind: str  # "images", "corpus", ...: which datamodule reads it
    source: str  # the path it was prepared from
    fingerprint: str  # of the source when prepared (see `fingerprint`)
    splits: dict[str, int]  # split -> samples (tokens, for a corpus)
    state: dict[str, Any] = field(default_factory=dict)  # the datamodule's inference state, and more
    files: dict[str, int] = field(default_factory=dict)  # shard path (relative) -> size in bytes
    digests: dict[str, str] = field(default_factory=dict)  # shard path (relative) -> sha256, checked on reading
    settings: dict[str, Any] = field(default_factory=dict)  # the prepare options that shaped the shards
    version: int = FORMAT_VERSION

    def write(self, folder: Path) -> None:
        """Record every shard's size and digest, then write the manifest atomically: the folder is then a
        dataset. (Sizes are checked whenever it is opened; digests by readers, as they first read a shard.)"""
        shards = [
            path
            for path in sorted(folder.rglob("*"))
            if path.is_file() and path.name != MANIFEST and not path.name.startswith(".")
        ]
        self.files = {str(path.relative_to(folder)): path.stat().st_size for path in shards}
        self.digests = {str(path.relative_to(folder)): sha256_of(path) for path in shards}
        partial = folder / f".{MANIFEST}.tmp"
        partial.write_text(json.dumps(asdict(self), indent=1))
        partial.replace(folder / MANIFEST)


def is_prepared(folder: Path | str | None) -> bool:
    return folder is not None and (Path(folder) / MANIFEST).is_file()


def read_manifest(folder: Path, kind: str, check_files: bool = True) -> Manifest:
    """The manifest of a prepared folder of `kind`, its shards checked; one-line errors for what is wrong."""
    path = folder / MANIFEST
    if not path.is_file():
        hint = "its prepare did not finish: run the same prepare command again to go on" if folder.is_dir() else ""
        raise ConfigError(f"{folder} is not a prepared dataset ({MANIFEST} missing){'; ' + hint if hint else ''}")
    try:
        raw = json.loads(path.read_text())
        manifest = Manifest(**raw)
    except (ValueError, TypeError) as error:
        raise ConfigError(f"{path} is damaged ({error}); prepare the dataset again") from None
    if manifest.version != FORMAT_VERSION:
        raise ConfigError(
            f"{folder} was prepared by another version of firstlight (format {manifest.version}, this one reads "
            f"{FORMAT_VERSION}); prepare it again with: python -m experiments.prepare {manifest.source} {folder}"
        )
    if manifest.kind != kind:
        raise ConfigError(f"{folder} holds prepared {manifest.kind}, not {kind}; give a dataset of {kind}")
    if check_files:
        for name, size in manifest.files.items():
            shard = folder / name
            if not shard.is_file():
                raise ConfigError(f"shard {shard} is missing; restore it, or prepare the dataset again")
            if shard.stat().st_size != size:
                raise ConfigError(
                    f"shard {shard} is {shard.stat().st_size:,} bytes, {size:,} when prepared (truncated or "
                    "replaced); restore it, or prepare the dataset again"
                )
    source = Path(manifest.source)
    if source.exists() and fingerprint(source) != manifest.fingerprint:
        raise ConfigError(
            f"{source} has changed since {folder} was prepared from it; prepare it again to train on the "
            f"new data: python -m experiments.prepare {source} {folder} --overwrite"
        )
    return manifest


def fingerprint(source: Path) -> str:
    """A digest of a file or folder's listing: names, sizes and modification times (contents are not read, so
    it is quick on millions of files; a file's mtime changes when it is rewritten). For a folder, the count
    and total size of all files, and the names, sizes and mtimes of up to FINGERPRINT_SAMPLE of them."""
    digest = hashlib.sha256()
    if source.is_file():
        stat = source.stat()
        digest.update(f"{source.name}:{stat.st_size}:{stat.st_mtime_ns}".encode())
        return digest.hexdigest()[:16]
    files = sorted(
        os.path.join(root, name) for root, _, names in os.walk(source) for name in names if not name.startswith(".")
    )
    stats = [os.stat(path) for path in files]
    digest.update(f"{len(files)}:{sum(s.st_size for s in stats)}".encode())
    step = max(1, len(files) // FINGERPRINT_SAMPLE)
    for path, stat in list(zip(files, stats, strict=True))[::step]:
        digest.update(f"{os.path.relpath(path, source)}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    return digest.hexdigest()[:16]
