"""Stop a run whose training loss stops being finite, before the bad step is applied or saved.

A NaN or infinite loss poisons every weight it reaches: the optimizer step spreads it, and a checkpoint
saved afterwards holds nothing usable. `FiniteLoss` checks the loss of every training step before its
backward pass. On the CPU the check is immediate, so the run stops before that step changes any weight.
Under DDP the processes check the sum of their losses, so all of them stop at the same step.
On an accelerator, reading the loss would wait for the device at every step; there the check's result is
copied to the host without waiting and read a step or more later, and every checkpoint save first waits
for all outstanding checks, so a checkpoint never holds weights after a non-finite loss.

The run stops with `NonFiniteLoss`, which names the step; `experiments.run` reports it in one line and
exits with code 1, keeping the checkpoints saved before it.
"""

from __future__ import annotations

import math
from collections import deque
from typing import Any

import lightning as L
import torch


class NonFiniteLoss(Exception):
    """The training loss was NaN or infinite at `step`."""

    def __init__(self, value: float, step: int, epoch: int) -> None:
        super().__init__(f"the training loss became {value} at step {step} (epoch {epoch + 1})")
        self.value, self.step, self.epoch = value, step, epoch


class FiniteLoss(L.Callback):
    """Args:
    deferred: read the check's result without waiting (default: on accelerators, not on the CPU).
    """

    def __init__(self, deferred: bool | None = None) -> None:
        self.deferred = deferred
        self.pending: deque[tuple[torch.Tensor, Any, int, int]] = deque()  # (loss on host, ready event, step, epoch)

    def on_before_backward(self, trainer: L.Trainer, pl_module: L.LightningModule, loss: torch.Tensor) -> None:
        loss = loss.detach()
        if trainer.world_size > 1 and torch.distributed.is_initialized():
            # Every process must stop at the same step (one left in a collective would wait for the others
            # forever): the sum is NaN or infinite if any process's loss is. Asynchronous on GPUs.
            loss = loss.float().clone()
            torch.distributed.all_reduce(loss)
        deferred = self.deferred if self.deferred is not None else loss.device.type != "cpu"
        if not deferred:
            self.check(loss, trainer.global_step, trainer.current_epoch)
            return
        on_host = loss.to("cpu", non_blocking=True)  # (no wait; complete when `ready` is)
        ready = torch.cuda.Event() if loss.device.type == "cuda" else None
        if ready is not None:
            ready.record()
        self.pending.append((on_host, ready, trainer.global_step, trainer.current_epoch))
        self.drain(wait=False)

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: Any) -> None:
        self.drain(wait=True)  # before anything is written: a failed check leaves the previous files

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.drain(wait=True)

    def drain(self, wait: bool) -> None:
        while self.pending:
            on_host, ready, step, epoch = self.pending[0]
            if ready is not None and not ready.query():
                if not wait:
                    return
                ready.synchronize()
            self.pending.popleft()
            self.check(on_host, step, epoch)

    @staticmethod
    def check(loss: torch.Tensor, step: int, epoch: int) -> None:
        # A scalar is read as it is (no kernel); otherwise the sum is NaN or infinite if any element is.
        value = float(loss) if loss.numel() == 1 else float(loss.float().sum())
        if not math.isfinite(value):
            raise NonFiniteLoss(value, step, epoch)
