"""Epoch metrics derived from per-stage counts agree with torchmetrics' own definitions."""

from __future__ import annotations

import pytest
import torch
from torchmetrics.classification import MulticlassAccuracy, MulticlassConfusionMatrix, MulticlassF1Score

from modules.classification import accuracy_and_macro_f1


@pytest.mark.parametrize("seed", range(5))
def test_accuracy_and_macro_f1_from_confusion_counts_match_torchmetrics(seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    num_classes = 7
    # Classes 5 and 6 never occur as labels; class 6 is also never predicted (it must not count in macro F1).
    labels = torch.randint(0, 5, (300,), generator=generator)
    logits = torch.randn(300, num_classes, generator=generator)
    logits[:, 6] = -10
    logits[labels == 2, 2] += 1.5  # some signal, so per-class scores differ
    counts = MulticlassConfusionMatrix(num_classes, validate_args=False)(logits, labels)
    accuracy, f1 = accuracy_and_macro_f1(counts)
    expected_accuracy = MulticlassAccuracy(num_classes, average="micro")(logits, labels)
    expected_f1 = MulticlassF1Score(num_classes, average="macro")(logits, labels)
    torch.testing.assert_close(accuracy, expected_accuracy)
    torch.testing.assert_close(f1, expected_f1)


def test_weighted_mean_weights_each_batch_by_its_size() -> None:
    from modules.metrics import WeightedMean

    losses = torch.tensor([0.5, 2.0, 1.0, 4.0])
    mean = WeightedMean()
    mean.update(losses[:3].mean(), 3)  # a batch of 3 examples, then one of 1
    mean.update(losses[3:].mean(), torch.tensor(1))
    torch.testing.assert_close(mean.compute(), losses.mean())


def test_confusion_counts_match_torchmetrics_and_reset() -> None:
    from modules.metrics import ConfusionCounts

    generator = torch.Generator().manual_seed(0)
    counts, expected = ConfusionCounts(6), MulticlassConfusionMatrix(6, validate_args=False)
    for size in (50, 7, 1):  # batches of different sizes add up
        labels, logits = torch.randint(0, 6, (size,), generator=generator), torch.randn(size, 6, generator=generator)
        counts.update(logits, labels)
        expected.update(logits, labels)
    assert torch.equal(counts.counts, expected.compute())
    assert int(counts.counts.sum()) == 58
    counts.reset()
    assert int(counts.counts.sum()) == 0
