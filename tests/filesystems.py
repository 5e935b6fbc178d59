"""Real filesystems for fault tests: a small tmpfs that can be filled, or made read-only (root only, as in CI;
elsewhere the tests that need one skip)."""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def small_filesystem(path: Path, size_mib: int) -> Iterator[bool]:
    """A tmpfs of `size_mib` MiB mounted at `path` (True), or False where mounting is not allowed."""
    path.mkdir()
    mounted = (
        os.geteuid() == 0
        and subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size_mib}m", "tmpfs", str(path)], capture_output=True
        ).returncode
        == 0
    )
    try:
        yield mounted
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(path)], check=False)


def make_read_only(path: Path) -> None:
    """Remount the filesystem mounted at `path` read-only (os.access and writes then fail, even for root)."""
    subprocess.run(["mount", "-o", "remount,ro", str(path)], check=True, capture_output=True)
