"""W&B media: tables of sample predictions and the validation confusion matrix.

Both are rank-zero only, import `wandb` lazily and do nothing without a WandbLogger. A model opts in by
implementing `sample_rows(batch, datamodule) -> (columns, rows)` (every firstlight task does) and, for
the confusion matrix, by being a classification task.
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_only


def wandb_logger(trainer: L.Trainer) -> Any:
    """The trainer's WandbLogger, or None."""
    from lightning.pytorch.loggers import WandbLogger

    return next((logger for logger in trainer.loggers if isinstance(logger, WandbLogger)), None)


def due(trainer: L.Trainer, every_n_epochs: int) -> bool:
    return not trainer.sanity_checking and (trainer.current_epoch + 1) % every_n_epochs == 0


def first_examples(batch: Any, count: int) -> Any:
    if isinstance(batch, list | tuple):
        return type(batch)(first_examples(item, count) for item in batch)
    return batch[:count].detach() if isinstance(batch, torch.Tensor) else batch


class PredictionSamples(L.Callback):
    """Logs `val/samples`: the model's outputs on the first `num_samples` validation examples, as a table
    (images with true and predicted label and confidence; texts; source/target/output; generated text).

    Args:
        every_n_epochs: log after every n-th validation epoch.
        num_samples: examples per table.
    """

    def __init__(self, every_n_epochs: int = 1, num_samples: int = 8) -> None:
        self.every_n_epochs = every_n_epochs
        self.num_samples = num_samples
        self.batch: Any = None

    def on_validation_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if batch_idx == 0 and dataloader_idx == 0:
            self.batch = first_examples(batch, self.num_samples)

    @rank_zero_only
    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        logger = wandb_logger(trainer)
        if logger is None or self.batch is None or not due(trainer, self.every_n_epochs):
            return
        sample_rows = getattr(pl_module, "sample_rows", None)
        if sample_rows is None:
            return
        with torch.no_grad():
            columns, rows = sample_rows(self.batch, trainer.datamodule)  # type: ignore[attr-defined]
        logger.log_table(key="val/samples", columns=columns, data=rows, step=trainer.global_step)
        # W&B drops images inside tables of offline runs (wandb/wandb#4611): log them as images too,
        # captioned with the row's other cells, so offline runs keep them and sync them later.
        import wandb

        images = [(cell, row) for row in rows for cell in row if isinstance(cell, wandb.Image)]
        if images:
            captions = [
                ", ".join(f"{c}: {v}" for c, v in zip(columns, row, strict=True) if v is not image)
                for image, row in images
            ]
            logger.log_image(
                key="val/sample_images",
                images=[image for image, _ in images],
                caption=captions,
                step=trainer.global_step,
            )


class ConfusionMatrix(L.Callback):
    """Logs `val/confusion_matrix` (W&B's confusion-matrix chart) from the counts a classification task
    accumulates over each validation epoch.

    Args:
        every_n_epochs: log after every n-th validation epoch.
    """

    def __init__(self, every_n_epochs: int = 1) -> None:
        self.every_n_epochs = every_n_epochs

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        logger = wandb_logger(trainer)
        confusion = getattr(pl_module, "val_confusion", None)
        if logger is None or confusion is None or not due(trainer, self.every_n_epochs):
            return
        counts = confusion.compute().cpu()  # (true, predicted), summed over all processes: every rank takes part
        if trainer.is_global_zero:
            self.log_chart(trainer, logger, counts)

    @staticmethod
    def log_chart(trainer: L.Trainer, logger: Any, counts: torch.Tensor) -> None:
        import wandb

        names = list(getattr(getattr(trainer, "datamodule", None), "classes", None) or range(len(counts)))
        rows = [
            [str(names[t]), str(names[p]), int(counts[t, p])] for t in range(len(counts)) for p in range(len(counts))
        ]
        table = wandb.Table(columns=["Actual", "Predicted", "nPredictions"], data=rows)
        fields = {"Actual": "Actual", "Predicted": "Predicted", "nPredictions": "nPredictions"}
        chart = wandb.plot_table("wandb/confusion_matrix/v1", table, fields, {"title": "val confusion matrix"})
        logger.experiment.log({"val/confusion_matrix": chart, "trainer/global_step": trainer.global_step})
