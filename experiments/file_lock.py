"""An exclusive lock that holds across hosts on a shared file system (NFS, Lustre or GPFS without flock).

    with FileLock(Path("runs/my_sweep/sweep.lock")):
        ...  # read, change and write back a small shared file

The lock is a file created with O_CREAT | O_EXCL, atomic on every file system a cluster shares (NFSv3 and
later), holding who took it. `flock` is not used: Lustre mounted without `-o flock` refuses it, and older NFS
clients lock only on their own host. It is meant for the few milliseconds of a read-modify-write; one left
behind by a process killed while holding it is broken once it has not changed for `stale_s` by the file
system's own clock (the lock file's mtime against that of a file just written there, so the hosts' clocks
need not agree).
"""

from __future__ import annotations

import os
import secrets
import socket
import time
from pathlib import Path
from types import TracebackType


class FileLock:
    def __init__(self, path: Path, stale_s: float = 60.0) -> None:
        self.path = path
        self.stale_s = stale_s
        self.token = ""

    def __enter__(self) -> FileLock:
        token = f"{socket.gethostname()} {os.getpid()} {secrets.token_hex(4)}"
        waited_since = time.monotonic()
        pause = 0.002
        while True:
            try:
                descriptor = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                if time.monotonic() - waited_since >= self.stale_s and self.stale():
                    self.break_stale()
                time.sleep(pause)
                pause = min(pause * 2, 0.1)
                continue
            with os.fdopen(descriptor, "w") as lock:
                lock.write(token)
            self.token = token
            return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        try:  # only our own lock: one broken as stale and taken since belongs to its new holder
            if self.path.read_text() == self.token:
                self.path.unlink()
        except FileNotFoundError:
            pass
        self.token = ""

    def stale(self) -> bool:
        """Whether the lock file has not changed for stale_s, by the file system's clock."""
        try:
            held_since = self.path.stat().st_mtime
        except FileNotFoundError:
            return False
        return file_system_now(self.path.parent) - held_since >= self.stale_s

    def break_stale(self) -> None:
        """Move the stale lock aside (a rename: of two processes breaking it, one succeeds) and remove it."""
        aside = self.path.with_name(f"{self.path.name}.stale-{secrets.token_hex(4)}")
        try:
            os.rename(self.path, aside)
        except FileNotFoundError:
            return
        aside.unlink(missing_ok=True)


def file_system_now(directory: Path) -> float:
    """The current time as the file system in `directory` stamps files (a shared one's server clock)."""
    probe = directory / f".clock-{socket.gethostname()}-{os.getpid()}"
    probe.write_bytes(b"")
    try:
        return probe.stat().st_mtime
    finally:
        probe.unlink(missing_ok=True)
