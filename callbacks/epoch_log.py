"""One line per validation when there is no progress bar (output to a file or a cluster log)."""

from __future__ import annotations

import time

import lightning as L
from lightning.pytorch.utilities import rank_zero_only


class EpochLog(L.Callback):
    """Prints `epoch 3/10  train/loss 0.312  val/acc 0.911  val/loss 0.254  (8.2 s)` after each validation
    (`step 500/1000 ...` when training is counted in steps), only when the trainer shows no progress bar.
    The time is since the previous line. Printed when validation has ended: the model logs its epoch
    metrics in its own on_validation_epoch_end, which Lightning calls after the callbacks'."""

    def __init__(self) -> None:
        self.since = time.perf_counter()

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.since = time.perf_counter()

    @rank_zero_only
    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.progress_bar_callback is not None or trainer.sanity_checking:
            return
        shown = "  ".join(
            f"{name} {float(value):.4g}"
            for name, value in sorted(trainer.callback_metrics.items())
            if name == "train/loss" or name.startswith("val/")
        )
        if trainer.max_steps > 0:
            where = f"step {trainer.global_step}/{trainer.max_steps}"
        else:
            where = f"epoch {trainer.current_epoch + 1}" + (f"/{trainer.max_epochs}" if trainer.max_epochs else "")
        now = time.perf_counter()
        print(f"{where}  {shown}  ({now - self.since:.1f} s)", flush=True)
        self.since = now
