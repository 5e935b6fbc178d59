"""Callbacks for tests that deliver real signals at a chosen training step."""

from __future__ import annotations

import logging
import os
import signal
from pathlib import Path
from typing import Any

import lightning as L


class SignalAt(L.Callback):
    """Sends `signal_name` to this process `times` times when training step `step` starts (rank 0 only,
    once per run)."""

    def __init__(self, step: int, signal_name: str = "SIGTERM", times: int = 1) -> None:
        self.step = step
        self.signal_name = signal_name
        self.times = times

    def on_train_start(self, trainer: L.Trainer, *args: Any) -> None:
        self.armed = trainer.global_step < self.step  # a run resumed at or after the step is not signalled again

    def on_train_batch_start(self, trainer: L.Trainer, *args: Any) -> None:
        if self.armed and trainer.global_step == self.step and trainer.is_global_zero:
            for _ in range(self.times):
                os.kill(os.getpid(), getattr(signal, self.signal_name))


class SignalOutsideTraining(L.Callback):
    """Sends `signal_name` to this process as the sanity check starts (`when="sanity"`) or as the first test
    batch starts (`when="test"`): where Lightning's signal handling, not firstlight's, is active. Once per
    working directory (a marker file), so the resumed run, which keeps its callbacks, is not signalled."""

    def __init__(self, when: str = "test", signal_name: str = "SIGTERM") -> None:
        self.when = when
        self.signal_name = signal_name

    def send(self) -> None:
        marker = Path("signalled-outside-training")
        if not marker.exists():
            marker.touch()
            os.kill(os.getpid(), getattr(signal, self.signal_name))

    def on_sanity_check_start(self, trainer: L.Trainer, *args: Any) -> None:
        if self.when == "sanity":
            self.send()

    def on_test_batch_start(self, trainer: L.Trainer, *args: Any) -> None:
        if self.when == "test" and trainer.test_loop.batch_progress.current.ready == 1:
            self.send()


class StopWandbService(L.Callback):
    """Sends SIGTERM to this process's W&B service (wandb-core) when training step `step` starts, as a
    cluster's SIGTERM to every process of a job does."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer: L.Trainer, *args: Any) -> None:
        if trainer.global_step != self.step:
            return
        services = [pid for pid in child_processes() if "wandb-core" in Path(f"/proc/{pid}/cmdline").read_text()]
        if not services:
            raise RuntimeError("no wandb-core process among this process's children")
        for pid in services:
            os.kill(pid, signal.SIGTERM)
            os.waitpid(pid, 0)


def child_processes() -> list[int]:
    """Processes whose parent is this one (started from any of its threads)."""
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # the process ended meanwhile
            continue
        if int(fields[1]) == os.getpid():
            children.append(int(stat.parent.name))
    return children


class PoisonAt(L.Callback):
    """Fills the model's first weight with NaN as training step `step` starts: its loss is NaN."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        if trainer.global_step == self.step:
            next(pl_module.parameters()).data.fill_(float("nan"))


class FillDiskAt(L.Callback):
    """As training step `step` starts, fills the run directory's filesystem up to `leave_kib` KiB with a
    ballast file, as a disk that other programs fill up. For a small filesystem made for the test only."""

    def __init__(self, step: int, leave_kib: int = 256) -> None:
        self.step = step
        self.leave = leave_kib * 1024

    def on_train_batch_start(self, trainer: L.Trainer, *args: Any) -> None:
        if trainer.global_step != self.step:
            return
        fill(Path(trainer.default_root_dir), self.leave)
        # W&B's own log file (<run dir>/wandb/*/logs/debug.log), past the free end of its last page: every
        # record W&B logs from here fails to be written, as on a disk that filled up over a long run.
        logging.getLogger("wandb").info("." * 16384)


class FillDiskAfterTesting(L.Callback):
    """As testing ends, fills the run directory's filesystem completely: summary.json cannot be written.
    Once per working directory (a marker file), so the resumed run, which keeps its callbacks, can finish."""

    def on_test_end(self, trainer: L.Trainer, *args: Any) -> None:
        marker = Path("filled-after-testing")
        if not marker.exists():
            marker.touch()
            fill(Path(trainer.default_root_dir), leave=0)


def fill(folder: Path, leave: int) -> None:
    """Fill `folder`'s filesystem with a ballast file up to `leave` bytes free."""
    stats = os.statvfs(folder)
    with open(folder / "ballast", "wb") as ballast:
        os.posix_fallocate(ballast.fileno(), 0, max(4096, stats.f_bavail * stats.f_frsize - leave))


class FailWritesAt(L.Callback):
    """From training step `step` on, every checkpoint write fails with "No space left on device": the
    stand-in for FillDiskAt where no small filesystem can be mounted."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer: L.Trainer, *args: Any) -> None:
        if trainer.global_step != self.step:
            return
        import errno

        import callbacks.checkpointing

        def no_space(*args: Any, **kwargs: Any) -> None:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        callbacks.checkpointing.torch.save = no_space  # type: ignore[assignment]
