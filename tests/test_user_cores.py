"""A core of the user's own that breaks its task's contract is refused in one line, not a traceback deep in
the metrics."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from cores.contracts import ClassifierCore
from modules.classification import ClassificationTask
from validation import ConfigError


class OneClassTooMany(ClassifierCore):
    def __init__(self, num_classes: int = 3) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.head = nn.Linear(4, num_classes + 1)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.head(inputs)


def test_logits_of_the_wrong_width_are_refused_naming_the_core_and_the_width_expected() -> None:
    task = ClassificationTask(OneClassTooMany(num_classes=3), num_classes=3)
    batch = (torch.randn(5, 4), torch.tensor([0, 1, 2, 0, 1]))
    with pytest.raises(ConfigError, match=r"OneClassTooMany returned logits of shape \(5, 4\).*num_classes=3"):
        task.shared_step(batch, "train")
