"""`ImageClassifier`: the CNN core trained as a classification task."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import torch

from modules.classification import ClassificationTask
from modules.cnn import CNN
from modules.task import check_range


class ImageClassifier(ClassificationTask):
    """A CNN over images (B, C, H, W) -> logits (B, num_classes).

    Args:
        image_shape: (channels, height, width) of the input; linked from the datamodule by the CLI.
        num_classes: number of classes; linked from the datamodule by the CLI.
        channels: output channels of each conv stage; every stage halves the resolution.
        kernel_size: odd convolution kernel size.
        pool: "max" or "avg" pooling at the end of each stage.
        batch_norm: batch norm after every convolution.
        dropout: dropout probability before each fully connected layer.
        hidden_dim: width of the hidden fully connected layer.
        label_smoothing: cross-entropy label smoothing.
        **task_options: optimizer, schedule and penalty settings (see `TaskModule`).
    """

    def __init__(
        self,
        image_shape: tuple[int, int, int] = (1, 28, 28),
        num_classes: int = 10,
        channels: Sequence[int] = (32, 64),
        kernel_size: int = 3,
        pool: Literal["max", "avg"] = "max",
        batch_norm: bool = True,
        dropout: float = 0.1,
        hidden_dim: int = 128,
        label_smoothing: float = 0.0,
        **task_options: Any,
    ) -> None:
        super().__init__(num_classes=num_classes, label_smoothing=label_smoothing, **task_options)
        check_range("dropout", dropout, 0.0, 0.999)
        for width in (*channels, hidden_dim, kernel_size):
            check_range("channels, hidden_dim and kernel_size", width, 1)
        self.save_hyperparameters(logger=False)  # the tracker gets the whole nested config instead
        self.image_shape = tuple(image_shape)
        self.net = CNN(image_shape, num_classes, channels, kernel_size, pool, batch_norm, dropout, hidden_dim)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images)
