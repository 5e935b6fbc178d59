"""checkpoints/last.ckpt, the checkpoint a run resumes from, always the latest state: saved after every
training epoch (Lightning's `save_last` only refreshes it when a top-k checkpoint is saved) and, on
SIGTERM, SIGUSR1 or SIGINT (Ctrl-C), after the running batch, before the run stops cleanly.

Clusters send SIGTERM before killing a job (SLURM: on preemption, `scancel`, `scontrol requeue`) and
SIGUSR1 when asked to warn ahead of the time limit (`#SBATCH --signal=USR1@120`). The handler only sets
a flag. At the end of the running batch every process agrees on it (one tiny all-reduce under DDP) and
`last.ckpt` is saved (mid-epoch included: resuming continues with the next batch); the run stops as the
next batch would start, once Lightning has logged the last one, raising `Preempted`, which
`experiments.run` reports with exit code 128 + the signal number (143 for SIGTERM, 138 for SIGUSR1,
130 for Ctrl-C; a second Ctrl-C stops at once, without saving).
After SIGUSR1 under SLURM the job is requeued first, so that the requeued job resumes the run.
"""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path
from types import FrameType
from typing import Any

import lightning as L
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn

SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT)


class Preempted(Exception):
    """Training stopped on a signal after saving `checkpoint`."""

    def __init__(self, signal_name: str, step: int, checkpoint: str, requeued: bool) -> None:
        super().__init__(f"{signal_name} at step {step}; saved {checkpoint}")
        self.signal_name, self.step, self.checkpoint, self.requeued = signal_name, step, checkpoint, requeued


class LastCheckpoint(L.Callback):
    def __init__(self, checkpoint_dir: str) -> None:
        self.checkpoint_path = str(Path(checkpoint_dir) / "last.ckpt")
        self.received: signal.Signals | None = None
        self.stopping: str | None = None  # the signal's name, once the stop is agreed and saved
        self.saved_step = 0
        self.previous: dict[int, Any] = {}
        self.announce = True  # rank 0 tells the user what a Ctrl-C does

    def handle(self, signum: int, frame: FrameType | None) -> None:
        if signum == signal.SIGINT:
            if self.received is not None:  # Ctrl-C again: stop now, without saving
                raise KeyboardInterrupt
            if self.announce:  # os.write: safe inside a signal handler, unlike print
                os.write(2, b"\nstopping after this batch, saving last.ckpt (Ctrl-C again to stop at once)\n")
        self.received = signal.Signals(signum)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # After Lightning's own handlers are set (it would otherwise turn SIGTERM into an exception
        # raised at an arbitrary point of the loop, and SIGUSR1 is fatal by default).
        self.announce = trainer.is_global_zero
        for sig in SIGNALS:
            self.previous[sig] = signal.signal(sig, self.handle)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # After validation and the top-k checkpoints (ModelCheckpoint runs in on_validation_end), so the
        # state saved here includes this epoch's best scores.
        trainer.save_checkpoint(self.checkpoint_path, weights_only=False)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.restore()
        # A signal in the last batch or the last validation, with no batch left to stop before: the job is
        # still being stopped, so the run stops here, saved, rather than going on to test.
        self.save_if_signalled(trainer)
        if self.stopping is not None:
            self.stop(trainer)

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        self.restore()

    def restore(self) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)
        self.previous = {}

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        self.save_if_signalled(trainer)

    def save_if_signalled(self, trainer: L.Trainer) -> None:
        """Save last.ckpt once any process has received a signal (every process calls this)."""
        if self.stopping is not None or not trainer.strategy.reduce_boolean_decision(
            self.received is not None, all=False
        ):
            return
        self.stopping = self.received.name if self.received else "a signal on another process"
        self.saved_step = trainer.global_step
        trainer.save_checkpoint(self.checkpoint_path, weights_only=False)
        rank_zero_info(f"{self.stopping}: saved {self.checkpoint_path} at step {trainer.global_step}; stopping")

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        # Stop only now: Lightning logs a batch's metrics after its on_train_batch_end, and they belong to
        # the run (the checkpoint of this state is on disk; after an epoch's end, a later one is).
        if self.stopping is not None:
            self.stop(trainer)

    def stop(self, trainer: L.Trainer) -> None:
        # Requeueing makes SLURM stop this job soon: everything worth keeping is on disk by now.
        requeued = self.received == signal.SIGUSR1 and trainer.is_global_zero and requeue_slurm_job()
        raise Preempted(self.stopping or "a signal", self.saved_step, self.checkpoint_path, requeued)


def requeue_slurm_job() -> bool:
    """Requeue this SLURM job (it must have been submitted with --requeue); False outside SLURM."""
    array = os.environ.get("SLURM_ARRAY_JOB_ID")
    job = f"{array}_{os.environ.get('SLURM_ARRAY_TASK_ID')}" if array else os.environ.get("SLURM_JOB_ID")
    if not job:
        return False
    result = subprocess.run(["scontrol", "requeue", job], capture_output=True, text=True)
    if result.returncode != 0:
        rank_zero_warn(f"scontrol requeue {job} failed: {result.stderr.strip()}")
    return result.returncode == 0
