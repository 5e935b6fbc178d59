"""A plain convolutional classifier: conv stages, pooling, a fully connected head. No Lightning here."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from torch import nn

from cores.contracts import ClassifierCore
from validation import ConfigError, check_range


def conv_stage(
    in_channels: int, out_channels: int, kernel_size: int, pool: str, batch_norm: bool, depth: int = 2
) -> nn.Sequential:
    """`depth` same-padded convolutions, then a 2x2 pool: (B, in, H, W) -> (B, out, H // 2, W // 2)."""
    layers: list[nn.Module] = []
    for c_in in (in_channels, *[out_channels] * (depth - 1)):
        # The bias is redundant when batch norm follows: its shift absorbs it.
        layers.append(nn.Conv2d(c_in, out_channels, kernel_size, padding=kernel_size // 2, bias=not batch_norm))
        if batch_norm:
            layers.append(nn.BatchNorm2d(out_channels))
        layers.append(nn.ReLU(inplace=True))
    layers.append(nn.MaxPool2d(2) if pool == "max" else nn.AvgPool2d(2))
    return nn.Sequential(*layers)


class CNNClassifier(ClassifierCore):
    """Images (B, C, H, W) -> class logits (B, num_classes): conv stages that halve the resolution, then
    dropout -> hidden layer -> logits. Softmax belongs to the loss (cross-entropy) or to inference.

    Args:
        image_shape: (channels, height, width) of the input; from the datamodule.
        num_classes: number of classes; from the datamodule.
        channels: output channels of each conv stage; every stage halves the resolution.
        depths: convolutions in each stage (default 2 each); a single convolution in the first,
            full-resolution stage makes a step ~1.5x cheaper for 28x28 images.
        kernel_size: odd convolution kernel size.
        pool: "max" or "avg" pooling at the end of each stage.
        batch_norm: batch norm after every convolution.
        dropout: dropout probability before each fully connected layer.
        hidden_dim: width of the hidden fully connected layer.
        channels_last: keep images and convolution weights in the channels-last (NHWC) memory layout, which
            the convolution kernels of CPUs (oneDNN) and GPUs (tensor cores) run faster: x1.2-1.6 per
            training step on a 2-core CPU for the Fashion-MNIST CNNs (python -m benchmarks.channels_last).
            The layout does not change results or checkpoints.
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
        depths: Sequence[int] | None = None,
        channels_last: bool = True,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        check_range("dropout", dropout, 0.0, 0.999)
        for width in (*channels, hidden_dim, kernel_size):
            check_range("channels, hidden_dim and kernel_size", width, 1)
        in_channels, height, width = image_shape
        depths = list(depths) if depths is not None else [2] * len(channels)
        if len(depths) != len(channels) or min(depths, default=1) < 1:
            raise ConfigError(
                f"depths needs one count of at least 1 per entry of channels ({len(channels)}), got {depths}"
            )
        if min(height, width) < 2 ** len(channels):
            raise ConfigError(
                f"an image of {height}x{width} is too small for {len(channels)} pooling stages; "
                f"use at most {max(0, min(height, width).bit_length() - 1)} entries in channels"
            )
        if kernel_size % 2 == 0:
            raise ConfigError(f"kernel_size must be odd to keep the image size, got {kernel_size}")
        stages = []
        for out_channels, depth in zip(channels, depths, strict=True):
            stages.append(conv_stage(in_channels, out_channels, kernel_size, pool, batch_norm, depth))
            in_channels = out_channels
            height, width = height // 2, width // 2
        self.features = nn.Sequential(*stages)
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Dropout(dropout),
            nn.Linear(in_channels * height * width, hidden_dim),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(hidden_dim, num_classes),
        )
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.to(memory_format=self.memory_format)  # moving to a device later keeps the layout

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        images = images.contiguous(memory_format=self.memory_format)
        return self.classifier(self.features(images))  # (B, C, H, W) -> (B, num_classes)
