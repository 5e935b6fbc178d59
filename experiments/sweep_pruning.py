"""Early termination inside a trial of an offline sweep: a Lightning callback that reports the sweep's
metric after each validation and stops the trial when Optuna's Hyperband says it is hopeless.

The sweep starts such a trial with $FIRSTLIGHT_SWEEP_DIR (its directory) and $FIRSTLIGHT_SWEEP_TRIAL (its
index); the run adds the callback when they are set. A stopped trial ends its fit as if it had reached its
last epoch (its checkpoints and summary are written as usual); the sweep then records it as pruned.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import lightning as L

from experiments.sweep_record import RECORD
from experiments.sweep_search import report
from validation import ConfigError


class SweepPruning(L.Callback):
    def __init__(self, directory: Path, index: int, metric: str) -> None:
        self.directory = directory
        self.index = index
        self.metric = metric

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        prune = False
        if trainer.is_global_zero:
            value = trainer.callback_metrics.get(self.metric)
            if value is None:
                logged = ", ".join(sorted(key for key in trainer.callback_metrics if key.startswith("val"))) or "none"
                raise ConfigError(
                    f"the sweep's metric {self.metric} is not logged in validation (logged: {logged}); "
                    "fix metric.name in the sweep spec"
                )
            prune = report(self.directory, self.index, float(value))
            if prune:
                print(f"pruned: the sweep's early_terminate stops this trial ({self.metric}={float(value):.4g})")
        if trainer.strategy.broadcast(prune):
            trainer.should_stop = True


def pruning_from_environment() -> SweepPruning | None:
    """The callback of a trial started by an offline sweep with early_terminate, else None."""
    directory, index = os.environ.get("FIRSTLIGHT_SWEEP_DIR"), os.environ.get("FIRSTLIGHT_SWEEP_TRIAL")
    if not directory or index is None:
        return None
    state: dict[str, Any] = json.loads((Path(directory) / RECORD).read_text())
    if not state.get("early_terminate"):
        return None
    return SweepPruning(Path(directory), int(index), state["metric"])
