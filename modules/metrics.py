"""Epoch metrics accumulated on the device, reduced across processes once, when the epoch ends."""

from __future__ import annotations

import torch
from torchmetrics import Metric


class WeightedMean(Metric):
    """sum(value * weight) / sum(weight) over everything `update` saw, on all processes.

    Per-batch means weighted by batch size give the exact mean over examples, whatever the shards and batch
    sizes. Written here because torchmetrics' MeanMetric either checks every update for NaN (a host sync
    per step on a GPU) or, with `nan_strategy="disable"`, drops the weights (torchmetrics 1.9).
    """

    full_state_update = False
    total: torch.Tensor
    weight: torch.Tensor

    def __init__(self) -> None:
        super().__init__()
        self.add_state("total", default=torch.tensor(0.0), dist_reduce_fx="sum")
        self.add_state("weight", default=torch.tensor(0.0), dist_reduce_fx="sum")

    def update(self, value: torch.Tensor, weight: float | torch.Tensor = 1.0) -> None:
        self.total += value.detach().float() * weight
        self.weight += weight

    def compute(self) -> torch.Tensor:
        return self.total / self.weight


class ConfusionCounts(torch.nn.Module):
    """Counts of (true class, predicted class): a (num_classes, num_classes) buffer on the model's device,
    from which accuracy and F1 are derived at epoch end. One bincount added in place per batch.

    Not a torchmetrics Metric: inside a training step, a Metric's update wrapper alone costs ~0.14 ms and
    MulticlassConfusionMatrix's input formatting another ~0.07 ms, against ~0.2 ms for the counting itself
    (measured right after a forward and backward pass of the digits CNN, as in a real step). The sum over
    processes is one all-reduce when the epoch ends (`TaskModule.summed`).
    """

    counts: torch.Tensor

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.register_buffer("counts", torch.zeros(num_classes, num_classes, dtype=torch.long), persistent=False)

    def update(self, logits: torch.Tensor, labels: torch.Tensor) -> None:
        """logits (N, num_classes), labels (N,) in [0, num_classes)."""
        pairs = labels * self.num_classes + logits.argmax(-1)
        self.counts.add_(torch.bincount(pairs, minlength=self.num_classes**2).view(self.num_classes, -1))

    def reset(self) -> None:
        self.counts.zero_()
