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
