"""runs/<sweep>/sweep.json: the record of a sweep's trials that all its processes share, on any host.

Every change is a read-modify-write under `sweep.lock` (a `FileLock`, safe on shared file systems), and
the file is replaced atomically, so a reader never sees half of it. Each trial's record holds its parameters,
its status (running, finished, pruned, failed or interrupted), its claim (host, pid, lease), its run and
metric, and while it trains with early termination, the metric after each validation (`intermediate`).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from experiments.file_lock import FileLock
from experiments.rundir import write_atomic

RECORD = "sweep.json"
DONE = ("finished", "pruned")  # not run again


@contextlib.contextmanager
def locked_record(directory: Path, new: Callable[[], dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """The record, read under the lock (`new()` when there is none yet) and written back when the block ends
    (not when it raises)."""
    directory.mkdir(parents=True, exist_ok=True)
    with FileLock(directory / "sweep.lock"):
        path = directory / RECORD
        state = json.loads(path.read_text()) if path.is_file() else new()
        yield state
        write_atomic(path, json.dumps(state, indent=2) + "\n")


def no_record() -> dict[str, Any]:
    raise FileNotFoundError(RECORD)
