"""One line about the run's set-up when training starts."""

from __future__ import annotations

import sys

import lightning as L


class StartNote(L.Callback):
    """Prints a line about the run's set-up (its precision and why) when training starts: after the data
    and the sanity check have passed, so a mistake found there is still reported in one line alone."""

    def __init__(self, note: str) -> None:
        self.note = note

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.is_global_zero:
            print(self.note, file=sys.stderr, flush=True)
