"""Classification: cross-entropy on logits, accuracy and macro F1, one step shared by train/val/test."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MulticlassConfusionMatrix, MulticlassF1Score

from modules.task import TaskModule, check_range


class ClassificationTask(TaskModule):
    """A model whose `forward(inputs)` returns class logits (B, num_classes) for batches `(inputs, labels)`.

    Args:
        num_classes: number of classes; linked from the datamodule by the CLI.
        label_smoothing: cross-entropy label smoothing in [0, 1).
        **task_options: optimizer, schedule and penalty settings of `TaskModule`.
    """

    def __init__(self, num_classes: int, label_smoothing: float = 0.0, **task_options: Any) -> None:
        super().__init__(**task_options)
        check_range("num_classes", num_classes, 2)
        check_range("label_smoothing", label_smoothing, 0.0, 0.999)
        self.loss_fn = nn.CrossEntropyLoss(label_smoothing=label_smoothing)
        metrics = MetricCollection(
            {
                "acc": MulticlassAccuracy(num_classes, average="micro"),
                "f1": MulticlassF1Score(num_classes, average="macro"),
            }
        )
        # One metric state per stage, kept on the model's device and computed once per epoch.
        self.train_metrics = metrics.clone(prefix="train/")
        self.val_metrics = metrics.clone(prefix="val/")
        self.test_metrics = metrics.clone(prefix="test/")
        self.val_confusion = MulticlassConfusionMatrix(num_classes)  # read by the ConfusionMatrix callback

    def shared_step(self, batch: tuple[torch.Tensor, torch.Tensor], stage: str) -> torch.Tensor:
        inputs, labels = batch
        logits = self(inputs)  # (B, num_classes)
        loss = self.loss_fn(logits, labels)
        metrics: MetricCollection = getattr(self, f"{stage}_metrics")
        metrics.update(logits.detach(), labels)
        if stage == "val":
            self.val_confusion.update(logits.detach(), labels)
        self.log_loss(stage, loss, len(labels))
        self.log_dict(metrics, on_step=False, on_epoch=True)  # computed once per epoch
        return loss

    def on_validation_epoch_start(self) -> None:
        self.val_confusion.reset()

    def sample_rows(self, batch: tuple[torch.Tensor, torch.Tensor], datamodule: Any) -> tuple[list[str], list[list]]:
        """Rows for a W&B table: the input (an image, or the decoded text), true and predicted class, confidence."""
        import wandb

        inputs, labels = batch
        probabilities = self(inputs).float().softmax(-1)
        confidence, predicted = probabilities.max(-1)
        names = getattr(datamodule, "classes", None) or [str(i) for i in range(probabilities.shape[-1])]
        tokenizer = getattr(datamodule, "tokenizer", None)
        rows = []
        for x, label, guess, p in zip(inputs, labels.tolist(), predicted.tolist(), confidence.tolist(), strict=True):
            if x.ndim == 3:  # (C, H, W), normalised: stretch to 0-255 for display
                pixels = (x - x.min()) / (x.max() - x.min() + 1e-8) * 255
                shown: Any = wandb.Image(pixels.byte().permute(1, 2, 0).squeeze(-1).cpu().numpy())
            else:
                shown = tokenizer.decode(x.tolist()) if tokenizer else str(x.tolist())  # specials decode to nothing
            rows.append([shown, names[label], names[guess], round(p, 4)])
        return ["input", "true", "predicted", "confidence"], rows

    def predict_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        inputs = batch[0] if isinstance(batch, list | tuple) else batch
        return self(inputs).softmax(dim=-1)  # (B, num_classes) class probabilities
