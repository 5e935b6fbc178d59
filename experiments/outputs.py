"""Where the commands (predict, explain, export, shrink, compare) write.

    check_output(path, overwrite, given=True)  # before any work: ConfigError (exit 2) if it cannot be written
    commit({path: data_or_staged_file, ...})   # every file in place, or none; OutputError (exit 1) on a fault

A stop (Ctrl-C, SIGTERM) raises through the work (`experiments.command_line.ends_cleanly`), with no temporary
file left.

A file is written whole or not at all: each is first written as a hidden temporary beside its final path
(`.<name>.tmp`), then all are renamed into place together with the stop signals held, so a stop or a full
disk leaves the old files or the new ones, never half of one, and the temporaries are removed in every case.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import signal
from collections.abc import Iterator
from pathlib import Path

from experiments.rundir import first_existing, missing_folders
from validation import ConfigError

STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM}
SPACE_HINT = "free some space, or write elsewhere with --output"
written: list[Path] = []  # the files `commit` put in place in this process (a stop after them names them)


class OutputError(Exception):
    """A file that could not be written although its folder was writable (a full disk, a lost mount): a fault."""


class Terminated(BaseException):
    """SIGTERM, as KeyboardInterrupt is Ctrl-C: a BaseException, so no `except Exception` of a library stops it."""


def raise_terminated(signum: int, frame: object) -> None:
    raise Terminated


# Checked before any work


def read_only(folder: Path) -> bool:
    with contextlib.suppress(OSError):
        return bool(os.statvfs(folder).f_flag & os.ST_RDONLY)
    return False


def check_folder(folder: Path, label: str, create: bool = False, fix: str = "choose a folder you can write to") -> None:
    """Refuse a folder that cannot take files: missing (unless the command makes it: `create`), a file, or
    not writable (os.access is False on a read-only filesystem even for root). `fix` says what to do instead."""
    existing = first_existing(folder)
    if existing != folder.absolute() and not create:
        raise ConfigError(f"{label}: folder {folder} does not exist")
    if not existing.is_dir():
        raise ConfigError(f"{label}: {existing} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        why = " (a read-only filesystem)" if read_only(existing) else ""
        raise ConfigError(f"{label}: cannot write in {existing}{why}; {fix}")


def check_output(path: Path, overwrite: bool, given: bool, option: str = "--output", create: bool = False) -> None:
    """Refuse an output file that cannot be written, before any work: a folder, an existing file (without
    --overwrite), or a folder that is missing or not writable. `given`: the user named it with `option`
    (else it is the command's default, beside the run, whose folder the command may `create`)."""
    label = f"{option} {path}" if given else str(path)
    retry = "give another path" if given else f"give another path with {option}"
    if path.is_dir():
        raise ConfigError(f"{label}: is a folder; give a file")
    if path.exists() and not overwrite:
        raise ConfigError(f"{label}: exists; {retry}, or --overwrite to replace it")
    check_folder(path.parent, label, create, "choose a folder you can write to" if given else retry)


# Written whole or not at all


def temporary_of(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp")


def write_temporary(path: Path, content: bytes | Path) -> Path:
    """The hidden temporary of `path` holding `content` (bytes, or a staged file copied)."""
    temporary = temporary_of(path)
    if isinstance(content, Path):
        shutil.copyfile(content, temporary)
    else:
        temporary.write_bytes(content)
    return temporary


@contextlib.contextmanager
def signals_held() -> Iterator[None]:
    """Ctrl-C and SIGTERM wait until the block ends (then they act): a set of renames is not cut in two."""
    held = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, held)


def commit(files: dict[Path, bytes | Path]) -> None:
    """Put every file in place, or none: their temporaries are written first (a full disk fails here, with
    nothing replaced), then renamed with the stop signals held. Folders it makes for them (a run's export/)
    are removed again if nothing was put in them. Raises OutputError for a write the system refused."""
    made = [folder for path in files for folder in missing_folders(path.parent)]
    temporaries: list[Path] = []
    replaced = 0
    try:
        for path, content in files.items():
            path.parent.mkdir(parents=True, exist_ok=True)
            temporaries.append(temporary_of(path))
            write_temporary(path, content)
        with signals_held():
            for path, temporary in zip(files, temporaries, strict=True):
                os.replace(temporary, path)
                written.append(path)
                replaced += 1
    except OSError as error:
        hint = f"; {SPACE_HINT}" if error.errno in (errno.ENOSPC, errno.EDQUOT) else ""
        kept = "nothing was written" if not replaced else f"{replaced} of {len(files)} files were written"
        raise OutputError(f"could not write {path}: {error.strerror or error}{hint}; {kept}") from None
    finally:
        for temporary in temporaries:
            with contextlib.suppress(OSError):
                temporary.unlink(missing_ok=True)
        for folder in made:  # deepest first; one that holds a file stays
            with contextlib.suppress(OSError):
                folder.rmdir()
