"""FileLock: one holder at a time across processes, a lock left by a dead holder broken once stale, and a
release that never removes another holder's lock."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from experiments.file_lock import FileLock
from tests.helpers import fresh_env

COUNT_UNDER_LOCK = """
import sys
from pathlib import Path

import pytest
from experiments.file_lock import FileLock
lock, counter = Path(sys.argv[1]), Path(sys.argv[2])
for _ in range(40):
    with FileLock(lock):
        value = int(counter.read_text())  # a read-modify-write that loses updates without the lock
        counter.write_text(str(value + 1))
"""


def test_processes_holding_the_lock_never_overlap(tmp_path: Path) -> None:
    counter = tmp_path / "counter"
    counter.write_text("0")
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", COUNT_UNDER_LOCK, str(tmp_path / "x.lock"), str(counter)], env=fresh_env()
        )
        for _ in range(4)
    ]
    assert [worker.wait(timeout=120) for worker in workers] == [0] * 4
    assert counter.read_text() == "160"
    assert not (tmp_path / "x.lock").exists()


def test_a_lock_left_by_a_dead_holder_is_broken_once_stale_and_a_live_one_is_waited_for(tmp_path: Path) -> None:
    lock = tmp_path / "x.lock"
    lock.write_text("another-host 123 abcd")  # its holder died while holding it
    old = time.time() - 120
    os.utime(lock, (old, old))
    started = time.monotonic()
    with FileLock(lock, stale_s=0.3):
        assert lock.read_text() != "another-host 123 abcd"
    assert time.monotonic() - started < 10 and not lock.exists()

    hold = "import sys, time\nfrom pathlib import Path\nfrom experiments.file_lock import FileLock\n"
    hold += "with FileLock(Path(sys.argv[1])):\n    print('held', flush=True)\n    time.sleep(1.5)\n"
    holder = subprocess.Popen([sys.executable, "-c", hold, str(lock)], stdout=subprocess.PIPE, env=fresh_env())
    assert holder.stdout is not None and holder.stdout.readline() == b"held\n"
    started = time.monotonic()
    with FileLock(lock, stale_s=60):  # held, not stale: waits for its release
        waited = time.monotonic() - started
    holder.wait(timeout=60)
    assert waited > 0.5


def test_leaving_the_lock_keeps_a_lock_that_another_process_holds_now(tmp_path: Path) -> None:
    lock = tmp_path / "x.lock"
    with FileLock(lock):
        lock.write_text("another-host 99 beef")  # broken as stale by another process, which took it
    assert lock.read_text() == "another-host 99 beef"


def test_a_file_system_without_flock_trains_unlocked_rather_than_failing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Lustre without `-o flock` answers ENOSYS (NFS without a lock daemon, ENOLCK): the run lock and its test
    give way to the sweep's leases; other errors still raise."""
    import errno
    import fcntl

    from experiments import rundir

    def no_flock(descriptor: int, operation: int) -> None:
        raise OSError(errno.ENOSYS, "Function not implemented")

    monkeypatch.setattr(fcntl, "flock", no_flock)
    with rundir.run_lock(tmp_path):
        assert not rundir.locked(tmp_path)

    def broken(descriptor: int, operation: int) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(fcntl, "flock", broken)
    with pytest.raises(OSError, match="Input/output error"), rundir.run_lock(tmp_path):
        pass
