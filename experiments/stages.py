"""Which stages a model and its data can run: any LightningModule works by class path, so a stage whose
step (or loader) it does not define is skipped with one line, never a traceback after training."""

from __future__ import annotations

import lightning as L
from lightning.pytorch.utilities.model_helpers import is_overridden

LOADERS = {"validation": "val_dataloader", "test": "test_dataloader"}


def missing_stage(model: L.LightningModule, datamodule: L.LightningDataModule | None, stage: str) -> str | None:
    """Why `stage` ("validation" or "test") cannot run, or None if it can."""
    if not is_overridden(f"{stage}_step", model):
        return f"{type(model).__name__} defines no {stage}_step"
    if datamodule is not None and not is_overridden(LOADERS[stage], datamodule):
        return f"{type(datamodule).__name__} defines no {LOADERS[stage]}"
    return None
