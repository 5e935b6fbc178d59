"""The prepared dataset a run streams from, as a W&B artifact of references: the run's input, not a copy."""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
from lightning.pytorch.utilities import rank_zero_only


class DatasetArtifact(L.Callback):
    """When the datamodule streams from a prepared folder (`prepared_dataset()`), a W&B artifact of type
    "dataset" that the run uses (offline: logs): a checksummed reference to the folder's manifest (it records
    every shard's size and the source's fingerprint, so other data is another artifact version) and references
    to its shards by path, size and time (gigabytes are never hashed or uploaded). A no-op without a
    WandbLogger or a prepared dataset."""

    @rank_zero_only
    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        from lightning.pytorch.loggers import WandbLogger

        datamodule = getattr(trainer, "datamodule", None)
        folder: Path | None = getattr(datamodule, "prepared_dataset", lambda: None)()
        loggers = [logger for logger in trainer.loggers if isinstance(logger, WandbLogger)]
        if folder is None or not loggers:
            return
        import wandb

        folder = folder.resolve()
        manifest = json.loads((folder / "firstlight.json").read_text())
        metadata = {key: manifest[key] for key in ("kind", "source", "fingerprint", "splits", "version")}
        artifact = wandb.Artifact(f"dataset-{folder.name}", type="dataset", metadata=metadata)
        artifact.add_reference(f"file://{folder / 'firstlight.json'}")
        artifact.add_reference(f"file://{folder}", name="shards", checksum=False)
        for logger in loggers:
            run = logger.experiment
            # Used as the run's input; offline, W&B can only log it (`wandb sync` uploads it with the run).
            run.log_artifact(artifact) if run.offline else run.use_artifact(artifact)
