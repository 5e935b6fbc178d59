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
        depths: convolutions in each stage (default 2 each); a single convolution in the first,
            full-resolution stage makes a step ~1.5x cheaper for 28x28 images.
        kernel_size: odd convolution kernel size.
        pool: "max" or "avg" pooling at the end of each stage.
        batch_norm: batch norm after every convolution.
        dropout: dropout probability before each fully connected layer.
        hidden_dim: width of the hidden fully connected layer.
        label_smoothing: cross-entropy label smoothing.
        channels_last: keep images and convolution weights in the channels-last (NHWC) memory layout, which
            the convolution kernels of CPUs (oneDNN) and GPUs (tensor cores) run faster: x1.2-1.6 per
            training step on a 2-core CPU for the Fashion-MNIST CNNs (python -m benchmarks.channels_last).
            The layout does not change results or checkpoints.
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
        depths: Sequence[int] | None = None,
        channels_last: bool = True,
        **task_options: Any,
    ) -> None:
        super().__init__(num_classes=num_classes, label_smoothing=label_smoothing, **task_options)
        check_range("dropout", dropout, 0.0, 0.999)
        for width in (*channels, hidden_dim, kernel_size):
            check_range("channels, hidden_dim and kernel_size", width, 1)
        self.save_hyperparameters(logger=False)  # the tracker gets the whole nested config instead
        self.image_shape = tuple(image_shape)
        self.net = CNN(image_shape, num_classes, channels, kernel_size, pool, batch_norm, dropout, hidden_dim, depths)
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.net.to(memory_format=self.memory_format)  # moving to a device later keeps the layout

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images.contiguous(memory_format=self.memory_format))  # (B, C, H, W) -> (B, classes)
