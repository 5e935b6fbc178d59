"""Training throughput to W&B: samples and tokens per second, over intervals (no per-step device sync)."""

from __future__ import annotations

import time
from typing import Any

import lightning as L
import torch

from callbacks.wandb_media import wandb_logger


def count_tokens(inputs: Any, pad_id: int = 0) -> torch.Tensor | int:
    """Non-padding tokens of an integer (B, T) batch, as a tensor left on its device; 0 for other inputs."""
    if isinstance(inputs, torch.Tensor) and inputs.ndim == 2 and not inputs.is_floating_point():
        return (inputs != pad_id).sum()
    return 0


class Throughput(L.Callback):
    """Logs `throughput/samples_per_s` and, for token inputs, `throughput/tokens_per_s` (non-padding
    tokens) every `every_n_steps` batches, summed over all processes. Counts stay on the device until
    logged, so measuring adds no synchronisation to the step. Does nothing without a WandbLogger.

    Args:
        every_n_steps: batches per measured interval.
    """

    def __init__(self, every_n_steps: int = 50) -> None:
        self.every_n_steps = every_n_steps
        self.last = time.perf_counter()
        self.start_interval()

    def start_interval(self) -> None:
        self.seconds = 0.0  # training time only: validation between batches is left out
        self.batches = self.samples = 0
        self.tokens: torch.Tensor | int = 0

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.last = time.perf_counter()

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.last = time.perf_counter()  # resume the clock after validation

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        now = time.perf_counter()
        self.seconds += now - self.last  # since the previous batch ended: loading, step and callbacks
        self.last = now
        inputs = batch[0] if isinstance(batch, list | tuple) else batch
        self.batches += 1
        self.samples += len(inputs)
        self.tokens = self.tokens + count_tokens(inputs, getattr(pl_module, "pad_id", 0))
        if self.batches < self.every_n_steps:
            return
        logger = wandb_logger(trainer)
        if logger is not None and trainer.is_global_zero:
            metrics = {"throughput/samples_per_s": self.samples * trainer.world_size / self.seconds}
            tokens = int(self.tokens)
            if tokens:
                metrics["throughput/tokens_per_s"] = tokens * trainer.world_size / self.seconds
            logger.log_metrics(metrics, step=trainer.global_step - 1)
        self.start_interval()
