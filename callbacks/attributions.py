"""W&B attributions: why the classifier decides as it does on a fixed validation sample, as integrated
gradients (`analysis.attribution`), logged on the media budget of the other media callbacks (`MediaSchedule`).

Rank zero only, `wandb` imported lazily, nothing without a WandbLogger, a classifier (`TaskModule.classifies`),
or inputs it explains (images; token ids: texts, biological sequences). In the text presets lstm_sentiment and
transformer_sentiment, where it costs 0.2-1.6% of an epoch on a 2-core CPU (64 points, 8 texts); not in
cnn_digits, whose epochs are so short that it would cost over 10% of each: add it to any classifier with
`--trainer.callbacks+=callbacks.attributions.Attributions`. Logging is on the media budget either way.
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_only, rank_zero_warn

from analysis.attribution import (
    BaselineKind,
    completeness,
    heat_map,
    image_attributions,
    image_baseline,
    token_attributions,
    token_separator,
    tokens_html,
    top_tokens,
)
from callbacks.wandb_media import ScheduledMedia, first_examples, log_dict, wandb_logger
from modules.task import TaskModule


class Attributions(ScheduledMedia):
    """Logs `val/attributions`, a table of the first `num_samples` validation examples (the same all run)
    with their true and predicted class and the integrated gradients of the predicted class's logit: texts
    as coloured tokens (`wandb.Html`, green for the class, red against) and their strongest tokens; images as
    heat maps (input | attributions | overlay; red for the class, blue against). The pages and images are
    logged again beside the table, as `val/attribution_texts` and `val/attribution_images` (captioned), since
    W&B keeps no media inside the tables of offline runs (wandb/wandb#4611). Each row says how well its
    attributions add up to the logit's change from the baseline (the completeness check).

    Args:
        every_n_epochs: log after every n-th validation epoch...
        max_overhead: ...unless computing them would take more than this share of the training time.
        num_samples: examples explained.
        steps: quadrature points along each path (each costs a forward and backward pass per example).
        baseline: images: "black" (the normalised image of zero pixels) or "mean" (the training mean).
    """

    def __init__(
        self,
        every_n_epochs: int = 1,
        max_overhead: float = 0.005,
        num_samples: int = 8,
        steps: int = 64,
        baseline: BaselineKind = "black",
    ) -> None:
        super().__init__(every_n_epochs, max_overhead)
        self.num_samples = num_samples
        self.steps = steps
        self.baseline: BaselineKind = baseline
        self.batch: Any = None
        self.warned = False

    def on_validation_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if self.batch is None and batch_idx == 0 and dataloader_idx == 0 and not trainer.sanity_checking:
            self.batch = first_examples(batch, self.num_samples)  # fixed for the run

    @rank_zero_only
    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        logger = wandb_logger(trainer)
        if logger is None or self.batch is None or not self.explainable(pl_module):
            return
        if not self.schedule.due(trainer):
            return
        with self.schedule.timed():
            self.log_attributions(trainer, logger, pl_module)  # type: ignore[arg-type]

    def explainable(self, model: L.LightningModule) -> bool:
        inputs = self.batch[0] if isinstance(self.batch, list | tuple) else None
        images = isinstance(inputs, torch.Tensor) and inputs.ndim == 4 and inputs.is_floating_point()
        tokens = isinstance(inputs, torch.Tensor) and inputs.ndim == 2 and not inputs.is_floating_point()
        classifier = getattr(model, "explains_answers", False) and getattr(model, "classifies", False)
        if classifier and (images or (tokens and model.pad_id is not None)):
            return True
        if not self.warned:
            self.warned = True
            rank_zero_warn("Attributions explains image and token classifiers; it logs nothing for this model")
        return False

    def log_attributions(self, trainer: L.Trainer, logger: Any, task: TaskModule) -> None:
        data = trainer.datamodule  # type: ignore[attr-defined]
        inputs, labels = self.batch[0].to(task.device), self.batch[1].tolist()
        names = list(getattr(data, "classes", None) or [])
        log = self.log_images if inputs.is_floating_point() else self.log_texts
        log(trainer.global_step, logger, task, data, inputs, [self.name(names, i) for i in labels], names)

    def log_images(
        self,
        step: int,
        logger: Any,
        task: TaskModule,
        data: Any,
        inputs: torch.Tensor,
        labels: list[str],
        names: list[str],
    ) -> None:
        import wandb

        baseline = image_baseline(data, inputs, self.baseline)
        results = image_attributions(task.net, inputs, baseline, steps=self.steps)
        rows, images = [], []
        for true, result in zip(labels, results, strict=True):
            predicted = self.name(names, result.target)
            caption = f"true: {true}, predicted: {predicted} ({result.probability:.2f}); {completeness(result)}"
            image = wandb.Image(heat_map(result.image, result.scores), caption=caption)
            rows.append([image, true, predicted, round(result.probability, 4), completeness(result)])
            images.append(image)
        columns = ["attributions", "true", "predicted", "confidence", "completeness"]
        logger.log_table(key="val/attributions", columns=columns, data=rows, step=step)
        log_dict(logger, {"val/attribution_images": images, "trainer/global_step": step})

    def log_texts(
        self,
        step: int,
        logger: Any,
        task: TaskModule,
        data: Any,
        inputs: torch.Tensor,
        labels: list[str],
        names: list[str],
    ) -> None:
        import wandb

        assert task.pad_id is not None  # checked by `explainable`
        tokenizer = getattr(data, "tokenizer", None)
        results = token_attributions(task.net, inputs, task.pad_id, tokenizer, steps=self.steps)
        rows, pages = [], []
        for true, result in zip(labels, results, strict=True):
            predicted = self.name(names, result.target)
            title = (
                f"true: {true}, predicted: {predicted} (p = {result.probability:.2f}); attributions to its logit: "
                f"{completeness(result)}"
            )
            page = wandb.Html(tokens_html(result, title))
            shown = token_separator(result.tokens).join(result.tokens)  # <unk> shown, not decoded to nothing
            rows.append([shown, true, predicted, page, top_tokens(result)])
            pages.append(page)
        columns = ["input", "true", "predicted", "attributions", "top tokens"]
        logger.log_table(key="val/attributions", columns=columns, data=rows, step=step)
        log_dict(logger, {"val/attribution_texts": pages, "trainer/global_step": step})

    @staticmethod
    def name(names: list[str], index: int) -> str:
        return names[index] if index < len(names) else str(index)
