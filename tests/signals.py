"""Callbacks for tests that deliver real signals at a chosen training step."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import lightning as L


class SignalAt(L.Callback):
    """Sends `signal_name` to this process when training step `step` starts (rank 0 only)."""

    def __init__(self, step: int, signal_name: str = "SIGTERM") -> None:
        self.step = step
        self.signal_name = signal_name

    def on_train_batch_start(self, trainer: L.Trainer, *args: Any) -> None:
        if trainer.global_step == self.step and trainer.is_global_zero:
            os.kill(os.getpid(), getattr(signal, self.signal_name))


class StopWandbService(L.Callback):
    """Sends SIGTERM to this process's W&B service (wandb-core) when training step `step` starts, as a
    cluster's SIGTERM to every process of a job does."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer: L.Trainer, *args: Any) -> None:
        if trainer.global_step != self.step:
            return
        children = Path(f"/proc/{os.getpid()}/task/{os.getpid()}/children").read_text().split()
        for pid in children:
            if "wandb-core" in Path(f"/proc/{pid}/cmdline").read_text():
                os.kill(int(pid), signal.SIGTERM)
                os.waitpid(int(pid), 0)
