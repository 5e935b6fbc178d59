"""A callback for tests that records which samples each process trains on (streamed batches carry their ids)."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import lightning as L


class RecordSamples(L.Callback):
    """Writes `folder/samples-rank<r>.json`: epoch -> the sample ids of each training batch of rank r."""

    def __init__(self, folder: str) -> None:
        self.folder = Path(folder)
        self.seen: dict[int, list[list[int]]] = defaultdict(list)

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        datamodule: Any = trainer.datamodule  # type: ignore[attr-defined]
        prepare = datamodule.prepare_batch

        def recording(batch: Any, training: bool) -> Any:
            if training:
                self.seen[trainer.current_epoch].append(batch[2].tolist())
            return prepare(batch, training)

        datamodule.prepare_batch = recording

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        (self.folder / f"samples-rank{trainer.global_rank}.json").write_text(json.dumps(self.seen))
