"""Callbacks for tests that deliver real signals at a chosen training step."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import lightning as L


class SignalAt(L.Callback):
    """Sends `signal_name` to this process when training step `step` starts (rank 0 only, once per run)."""

    def __init__(self, step: int, signal_name: str = "SIGTERM") -> None:
        self.step = step
        self.signal_name = signal_name

    def on_train_start(self, trainer: L.Trainer, *args: Any) -> None:
        self.armed = trainer.global_step < self.step  # a run resumed at or after the step is not signalled again

    def on_train_batch_start(self, trainer: L.Trainer, *args: Any) -> None:
        if self.armed and trainer.global_step == self.step and trainer.is_global_zero:
            os.kill(os.getpid(), getattr(signal, self.signal_name))


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
