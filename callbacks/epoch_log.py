"""One line per epoch when there is no progress bar (output to a file or a cluster log)."""

from __future__ import annotations

import time

import lightning as L
from lightning.pytorch.utilities import rank_zero_only


class EpochLog(L.Callback):
    """Prints `epoch 3/10  train/loss 0.312  val/acc 0.911  val/loss 0.254  (8.2 s)` after each validation,
    only when the trainer shows no progress bar."""

    def __init__(self) -> None:
        self.started = time.perf_counter()

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.started = time.perf_counter()

    @rank_zero_only
    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.progress_bar_callback is not None or trainer.sanity_checking:
            return
        metrics = trainer.callback_metrics
        shown = "  ".join(
            f"{name} {float(value):.4g}"
            for name, value in sorted(metrics.items())
            if name == "train/loss" or name.startswith("val/")
        )
        epochs = f"/{trainer.max_epochs}" if trainer.max_epochs and trainer.max_epochs > 0 else ""
        elapsed = time.perf_counter() - self.started
        print(f"epoch {trainer.current_epoch + 1}{epochs}  {shown}  ({elapsed:.1f} s)", flush=True)
