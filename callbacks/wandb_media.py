"""W&B media: tables of sample predictions and the validation confusion matrix.

Both log from rank zero only, import `wandb` lazily and do nothing without a WandbLogger. They ask a task
(`modules.task.TaskModule`) for its `sample_rows` and `confusion_counts`; a task without them returns
None. Media are logged on a budget (`MediaSchedule`).
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Iterator
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.utilities import rank_zero_only

from callbacks.time_budget import budget_timer
from modules.task import TaskModule


def wandb_logger(trainer: L.Trainer) -> Any:
    """The trainer's WandbLogger, or None (also once W&B's service has stopped mid-run)."""
    from lightning.pytorch.loggers import WandbLogger

    logger = next((logger for logger in trainer.loggers if isinstance(logger, WandbLogger)), None)
    return None if getattr(logger, "broken", False) else logger


def log_dict(logger: Any, data: dict[str, Any]) -> None:
    """Log W&B values (media, charts) in one call, through firstlight's guarded logger when it is one."""
    if hasattr(logger, "log_dict"):
        logger.log_dict(data)
    else:
        logger.experiment.log(data)


class MediaSchedule:
    """When a media log is due: after every n-th validation epoch, except while the time spent logging
    these media (including the next one, estimated by the last) would exceed `max_overhead` of the
    training time so far. The first and the final validation always log; under `--trainer.max_time` the
    final one is the one after which less time remains than the last interval between validations took.
    With short epochs media are logged every few epochs rather than slowing every epoch down; with long
    ones, every epoch.
    """

    def __init__(self, every_n_epochs: int, max_overhead: float) -> None:
        self.every_n_epochs = every_n_epochs
        self.max_overhead = max_overhead
        self.started: float | None = None
        self.spent = self.last_cost = 0.0
        self.last_validation = 0.0  # training seconds at the previous validation

    def start(self) -> None:
        self.started = time.perf_counter()

    def due(self, trainer: L.Trainer, agree: bool = False) -> bool:
        """Whether to log now; `agree` makes every process take rank 0's decision (for collective work)."""
        if trainer.sanity_checking:
            return False
        now = self.elapsed()
        interval, self.last_validation = now - self.last_validation, now
        if (trainer.current_epoch + 1) % self.every_n_epochs:
            return False
        final = final_validation(trainer) or time_runs_out(trainer, interval)
        decision = self.spent == 0 or final or self.within_budget()
        return bool(trainer.strategy.broadcast(decision, src=0)) if agree else decision

    def elapsed(self) -> float:
        return time.perf_counter() - (self.started or time.perf_counter())

    def within_budget(self) -> bool:
        return self.spent + self.last_cost <= self.max_overhead * self.elapsed()

    @contextlib.contextmanager
    def timed(self) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.last_cost = time.perf_counter() - started
            self.spent += self.last_cost


class ScheduledMedia(L.Callback):
    """Base of the media callbacks: their `MediaSchedule`, whose clock starts with training."""

    def __init__(self, every_n_epochs: int, max_overhead: float) -> None:
        self.schedule = MediaSchedule(every_n_epochs, max_overhead)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.is_global_zero and wandb_logger(trainer) is not None:
            warm_up_tables()
        self.schedule.start()


def warm_up_tables() -> None:
    """Import what a first `wandb.Table` imports (pandas, to test whether its data is a DataFrame: 0.15-0.3
    s on a 2-core CPU) before training starts, so the first media log does not stall a training step."""
    with contextlib.suppress(ImportError):
        import pandas  # noqa: F401


def final_validation(trainer: L.Trainer) -> bool:
    """Whether training stops (at `max_steps` or `max_epochs`) before another validation falls due.

    A run that validates every few hundred steps of one long epoch (a language model) is in its final epoch
    all along; only its last validation counts as final. A stop by `max_time` cannot be foreseen.
    """
    batches, between = trainer.num_training_batches, trainer.val_check_batch
    if not math.isfinite(batches) or between is None:
        return trainer.max_epochs is not None and trainer.current_epoch + 1 >= trainer.max_epochs > 0
    every_n_epochs = trainer.check_val_every_n_epoch
    # Validation every so many batches, or at the end of every n-th epoch.
    gap = between if every_n_epochs is None or between < batches else batches * every_n_epochs
    done_in_epoch: int = trainer.fit_loop.epoch_loop.batch_progress.current.processed  # type: ignore[attr-defined]
    steps_left = []
    if trainer.max_steps > 0:
        steps_left.append(trainer.max_steps - trainer.global_step)
    if trainer.max_epochs is not None and trainer.max_epochs > 0:
        steps_left.append((trainer.max_epochs - trainer.current_epoch) * int(batches) - done_in_epoch)
    return bool(steps_left) and min(steps_left) < gap


def time_runs_out(trainer: L.Trainer, interval: float) -> bool:
    """Whether the run's `max_time` (Lightning's Timer) ends within `interval` seconds: before the next
    validation, if it comes as long after this one as this one came after the last."""
    timer = budget_timer(trainer)
    return timer is not None and (timer.time_remaining() or 0.0) < interval


def first_examples(batch: Any, count: int) -> Any:
    if isinstance(batch, list | tuple):
        return type(batch)(first_examples(item, count) for item in batch)
    return batch[:count].detach() if isinstance(batch, torch.Tensor) else batch


class PredictionSamples(ScheduledMedia):
    """Logs `val/samples`: the model's outputs on the first `num_samples` validation examples, as a table
    (images with true and predicted label and confidence; texts; source/target/output; generated text).

    Args:
        every_n_epochs: log after every n-th validation epoch...
        max_overhead: ...unless logging them would take more than this share of the training time.
        num_samples: examples per table.
    """

    def __init__(self, every_n_epochs: int = 1, max_overhead: float = 0.005, num_samples: int = 8) -> None:
        super().__init__(every_n_epochs, max_overhead)
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
        if logger is None or self.batch is None or not isinstance(pl_module, TaskModule):
            return
        if not self.schedule.due(trainer):
            return
        with self.schedule.timed():
            self.log_samples(trainer, logger, pl_module)

    def log_samples(self, trainer: L.Trainer, logger: Any, task: TaskModule) -> None:
        with torch.inference_mode():  # rows become strings and images: nothing leaks
            table = task.sample_rows(self.batch, trainer.datamodule)  # type: ignore[attr-defined]
        if table is None:  # the task has no sample table
            return
        import wandb

        columns, plain_rows = table
        rows = [[wandb.Image(cell) if isinstance(cell, np.ndarray) else cell for cell in row] for row in plain_rows]
        logger.log_table(key="val/samples", columns=columns, data=rows, step=trainer.global_step)
        # W&B drops images inside tables of offline runs (wandb/wandb#4611): log them as images too,
        # captioned with the row's other cells, so offline runs keep them and sync them later.
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


class ConfusionMatrix(ScheduledMedia):
    """Logs `val/confusion_matrix` (W&B's confusion-matrix chart) from the counts a classification task
    accumulates over each validation epoch.

    Args:
        every_n_epochs: log after every n-th validation epoch...
        max_overhead: ...unless logging it would take more than this share of the training time.
    """

    def __init__(self, every_n_epochs: int = 1, max_overhead: float = 0.005) -> None:
        super().__init__(every_n_epochs, max_overhead)

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        logger = wandb_logger(trainer)
        if logger is None or not isinstance(pl_module, TaskModule) or not self.schedule.due(trainer, agree=True):
            return
        with self.schedule.timed():
            counts = pl_module.confusion_counts("val")  # (true, predicted), summed over all processes: all take part
            if counts is not None and trainer.is_global_zero:
                counts = counts.cpu()
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
        log_dict(logger, {"val/confusion_matrix": chart, "trainer/global_step": trainer.global_step})
