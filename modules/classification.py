"""Classification: cross-entropy on logits, accuracy and macro F1, one step shared by train/val/test."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from cores.contracts import ClassifierCore
from modules.metrics import ConfusionCounts
from modules.task import TaskModule
from validation import ConfigError, check_range


def accuracy_and_macro_f1(counts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Accuracy and macro F1 from confusion counts (true, predicted), as torchmetrics defines them: F1 is
    averaged over the classes that occur as a label or a prediction."""
    true_positives = counts.diagonal()  # integer sums stay exact; the divisions give floats
    accuracy = true_positives.sum() / counts.sum()
    denominators = counts.sum(0) + counts.sum(1)  # 2TP + FP + FN = (times predicted) + (times true)
    present = denominators > 0
    f1 = (2 * true_positives[present] / denominators[present]).mean()
    return accuracy, f1


def mixed(
    images: torch.Tensor, labels: torch.Tensor, alpha: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, float]:
    """Mixup: (lam * images + (1 - lam) * images[order], labels, labels[order], lam), lam ~ Beta(alpha, alpha),
    `order` a random permutation of the batch (torch's generator, seeded by the run)."""
    share = float(torch.distributions.Beta(alpha, alpha).sample())
    order = torch.randperm(len(labels), device=images.device)
    return share * images + (1 - share) * images[order], labels, labels[order], share


class ClassificationTask(TaskModule):
    """Batches `(inputs, labels)`; the core maps inputs to class logits (B, num_classes). Cross-entropy loss;
    accuracy and macro F1 from confusion counts.

    Args:
        net: a `ClassifierCore` (`python -m experiments.run --help` lists those in `cores/`), or your own.
        num_classes: number of classes; from the datamodule.
        pad_id: padding id of token inputs (None for images); from the datamodule.
        label_smoothing: cross-entropy label smoothing in [0, 1).
        mixup: mixup's alpha (Zhang et al. 2018): each training batch becomes lam * images + (1 - lam) * the same
            images in another order, with lam ~ Beta(alpha, alpha), and the loss mixes both labels alike; a
            regulariser for small image training sets (0.2-0.4 is usual; 0: off). Images only: token ids do
            not mix. The training accuracy then counts the label of the larger share.
        **task_options: optimizer, schedule and penalty settings of `TaskModule`.
    """

    explains_answers = True  # integrated gradients of the chosen class's logit
    classifies = True

    def __init__(
        self,
        net: ClassifierCore,
        num_classes: int = 2,
        pad_id: int | None = None,
        label_smoothing: float = 0.0,
        mixup: float = 0.0,
        **task_options: Any,
    ) -> None:
        super().__init__(net, **task_options)
        self.pad_id = pad_id
        check_range("num_classes", num_classes, 2)
        check_range("label_smoothing", label_smoothing, 0.0, 0.999)
        check_range("mixup", mixup, 0.0)
        if mixup and pad_id is not None:
            raise ConfigError("--model.mixup mixes images; token ids cannot be mixed (leave it at 0 for texts)")
        self.mixup = mixup
        self.loss_fn = nn.CrossEntropyLoss(label_smoothing=label_smoothing)
        # One confusion matrix per stage, counted on the model's device (one bincount per batch, no host sync);
        # accuracy and macro F1 are derived from it when the epoch ends, and the ConfusionMatrix callback
        # charts the validation one.
        self.train_confusion = ConfusionCounts(num_classes)
        self.val_confusion = ConfusionCounts(num_classes)
        self.test_confusion = ConfusionCounts(num_classes)

    def shared_step(self, batch: tuple[torch.Tensor, torch.Tensor], stage: str) -> torch.Tensor:
        inputs, labels = batch
        mixing = stage == "train" and self.mixup > 0
        if mixing:
            inputs, labels, others, share = mixed(inputs, labels, self.mixup)
        logits = self(inputs)  # (B, num_classes)
        classes = self.train_confusion.num_classes
        if logits.dim() != 2 or logits.shape[1] != classes:  # a core of the user's own, got wrong
            raise ConfigError(
                f"{type(self.net).__name__} returned logits of shape {tuple(logits.shape)}; a classifier core "
                f"returns (batch, num_classes={classes}): size the head by num_classes, an __init__ argument"
            )
        if mixing:
            loss = share * self.loss_fn(logits, labels) + (1 - share) * self.loss_fn(logits, others)
            self.confusion(stage).update(logits.detach(), labels if share >= 0.5 else others)
            self.log_loss(stage, loss, len(labels))
            return loss
        loss = self.loss_fn(logits, labels)  # also rejects labels outside [0, num_classes)
        self.confusion(stage).update(logits.detach(), labels)
        self.log_loss(stage, loss, len(labels))
        return loss

    def epoch_metrics(self, stage: str) -> dict[str, torch.Tensor]:
        metrics = super().epoch_metrics(stage)
        counts = self.confusion_counts(stage)
        if counts.sum() > 0:
            accuracy, f1 = accuracy_and_macro_f1(counts)
            metrics |= {f"{stage}/acc": accuracy, f"{stage}/f1": f1}
        self.confusion(stage).reset()
        return metrics

    def train_metric_state(self) -> dict[str, torch.Tensor]:
        return {"train_confusion": self.train_confusion.counts}

    def confusion(self, stage: str) -> ConfusionCounts:
        return getattr(self, f"{stage}_confusion")

    def confusion_counts(self, stage: str) -> torch.Tensor:
        """The stage's (true, predicted) counts of this epoch so far, summed over all processes (each calls)."""
        return self.summed(self.confusion(stage).counts)

    def sample_rows(self, batch: tuple[torch.Tensor, torch.Tensor], datamodule: Any) -> tuple[list[str], list[list]]:
        """Rows of sample predictions: the input (an image as a uint8 array, or the decoded text), true and
        predicted class, confidence."""
        inputs, labels = batch
        probabilities = self(inputs).float().softmax(-1)
        confidence, predicted = probabilities.max(-1)
        names = getattr(datamodule, "classes", None) or [str(i) for i in range(probabilities.shape[-1])]
        tokenizer = getattr(datamodule, "tokenizer", None)
        rows = []
        for x, label, guess, p in zip(inputs, labels.tolist(), predicted.tolist(), confidence.tolist(), strict=True):
            if x.ndim == 3:  # (C, H, W), normalised: stretch to 0-255 for display
                pixels = (x - x.min()) / (x.max() - x.min() + 1e-8) * 255
                shown: Any = pixels.byte().permute(1, 2, 0).squeeze(-1).cpu().numpy()  # (H, W) or (H, W, C)
            else:
                shown = tokenizer.decode(x.tolist()) if tokenizer else str(x.tolist())  # specials decode to nothing
            rows.append([shown, names[label], names[guess], round(p, 4)])
        return ["input", "true", "predicted", "confidence"], rows

    @torch.no_grad()
    def predictions(self, inputs: torch.Tensor, datamodule: Any, **options: Any) -> list[dict[str, Any]]:
        """The most probable class, its probability, and every class's probability."""
        probabilities = self(inputs).float().softmax(-1)
        names = list(datamodule.classes)
        return [
            {
                "prediction": names[int(row.argmax())],
                "confidence": round(float(row.max()), 4),
                "probabilities": {name: round(float(p), 4) for name, p in zip(names, row, strict=True)},
            }
            for row in probabilities
        ]

    def explained_answers(
        self, inputs: torch.Tensor, outputs: torch.Tensor, datamodule: Any, class_index: int | None
    ) -> list[list[tuple[int, str]]]:
        """One answer per input: the predicted class (or `class_index`), whose logit is explained."""
        names = list(getattr(datamodule, "classes", None) or [])
        chosen = outputs.argmax(-1).tolist() if class_index is None else [class_index] * len(outputs)
        return [[(index, names[index] if index < len(names) else str(index))] for index in chosen]

    def predict_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        inputs = batch[0] if isinstance(batch, list | tuple) else batch
        return self(inputs).softmax(dim=-1)  # (B, num_classes) class probabilities
