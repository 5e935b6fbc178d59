"""One run, one directory: runs/<experiment>/<run id>/ with config.yaml, checkpoints, W&B files, summary."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import math
import os
import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from validation import ConfigError


def new_run_id() -> str:
    """A sortable, unique id, also used as the W&B run id: e.g. 20261129-143012-5f2c9a."""
    return time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(3)


def check_run_root(root: Path) -> None:
    """Refuse a --run.root that cannot hold runs (a file on its path, a folder not writable), before anything
    is written."""
    existing = first_existing(root)
    if not existing.is_dir():
        raise ConfigError(f"--run.root {root}: {existing} is a file, not a folder; choose another --run.root")
    if not os.access(existing, os.W_OK | os.X_OK):  # also False on a read-only filesystem, even for root
        raise ConfigError(f"--run.root {root}: cannot write in {existing}; choose a folder you can write to")


def first_existing(path: Path) -> Path:
    """`path`, or its nearest folder above that exists (absolute)."""
    existing = path.absolute()
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    return existing


def missing_folders(path: Path) -> list[Path]:
    """The folders of `path` that do not exist yet, `path` first: what creating it will make."""
    missing = []
    while not path.exists() and path != path.parent:
        missing.append(path)
        path = path.parent
    return missing


def create_run_dir(path: Path, resuming: bool = False) -> Path:
    """Create the run directory; an existing one is only reused to resume it, so no run overwrites another."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.mkdir(exist_ok=resuming)  # raises FileExistsError rather than writing into another run
    return path


def write_atomic(path: Path, text: str) -> None:
    """Write to a temporary file, then rename: readers see the old file or the new one, never half of one."""
    temporary = path.with_name(f".{path.name}.tmp")
    try:
        temporary.write_text(text)
        os.replace(temporary, path)
    finally:  # a full disk or a stop: no half-written temporary left beside the file
        temporary.unlink(missing_ok=True)


def plain(value: Any) -> Any:
    """A JSON-friendly number: tensors to floats, NaN/inf to None."""
    value = value.item() if hasattr(value, "item") else value
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_summary(directory: Path, metrics: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """summary.json: a flat object of the final metrics under their logged names, plus `extra` fields."""
    summary = {name: plain(value) for name, value in sorted(metrics.items())} | extra
    write_atomic(directory / "summary.json", json.dumps(summary, indent=2) + "\n")
    return summary


def finished(run_dir: Path) -> bool:
    """A run is finished once it wrote summary.json; a stopped, crashed or preempted one has none."""
    return (run_dir / "summary.json").is_file()


@contextlib.contextmanager
def run_lock(run_dir: Path) -> Iterator[None]:
    """Held on the run directory itself by the process that trains the run, so that `--run.resume auto`
    elsewhere leaves it alone; the kernel releases it when the process ends, however it ends."""
    descriptor = os.open(run_dir, os.O_RDONLY)
    try:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            if error.errno not in NO_FLOCK:
                raise
        yield
    finally:
        os.close(descriptor)


# What a file system without flock answers (Lustre mounted without -o flock, NFS without a lock daemon):
# there the run trains unlocked, and sweeps on other hosts rely on their claims' leases.
NO_FLOCK = (errno.ENOLCK, errno.ENOSYS, errno.EOPNOTSUPP)


def locked(run_dir: Path) -> bool:
    descriptor = os.open(run_dir, os.O_RDONLY)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError as error:  # a file system without flock cannot tell
        if error.errno not in NO_FLOCK:
            raise
    finally:
        os.close(descriptor)
    return False


def locate_run(value: str, root: Path) -> Path:
    """A run directory given by its path or by its id (looked up under every experiment in root)."""
    path = Path(value)
    if (path / "config.yaml").is_file():
        return path.absolute()
    found = sorted(p.parent for p in root.glob(f"*/{value}/config.yaml")) if "/" not in value else []
    if len(found) == 1:
        return found[0].absolute()
    if not found and path.is_dir() and (path / "checkpoints").is_dir():  # a run's folder, config.yaml gone
        raise ConfigError(
            f"{path} has no config.yaml, which a run directory keeps its settings in; restore it from a copy, or "
            "start a new run"
        )
    where = f"among the runs in {root}" if not found else f"in several experiments: {', '.join(map(str, found))}"
    raise ConfigError(f"run {value} not found {where}; give the run directory (runs/<experiment>/<run id>)")


def unfinished_runs(experiment_dir: Path) -> list[Path]:
    """Runs of an experiment that stopped before finishing and that no process is training, newest first."""
    runs = sorted((p.parent for p in experiment_dir.glob("*/config.yaml")), key=lambda p: p.name, reverse=True)
    return [run for run in runs if not finished(run) and not locked(run) and any(run.glob("checkpoints/*.ckpt"))]


def cluster_run_id() -> str | None:
    """An id that a requeued cluster job keeps: SLURM's job id (array: job_task), or torchrun's --rdzv-id."""
    if os.environ.get("SLURM_ARRAY_JOB_ID") and os.environ.get("SLURM_ARRAY_TASK_ID"):
        return f"slurm-{os.environ['SLURM_ARRAY_JOB_ID']}_{os.environ['SLURM_ARRAY_TASK_ID']}"
    if os.environ.get("SLURM_JOB_ID") and os.environ.get("SLURM_JOB_NAME") not in (None, "bash", "interactive"):
        return f"slurm-{os.environ['SLURM_JOB_ID']}"
    if os.environ.get("TORCHELASTIC_RUN_ID", "none") != "none":
        return f"torchrun-{os.environ['TORCHELASTIC_RUN_ID']}"
    return None
