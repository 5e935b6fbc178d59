"""A 1-D convolutional classifier over token sequences (DNA, protein, text): motif detectors, then pooling."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from torch import nn
from torch.nn import functional as F

from cores.contracts import ClassifierCore
from validation import ConfigError, check_range


def halve(x: torch.Tensor) -> torch.Tensor:
    """(B, C, T) -> (B, C, ceil(T / 2)): the max of each pair of positions, a last odd one alone (max pooling by
    2 with ceil_mode), in slices: `max_pool1d` fixes the length when exported (ONNX, torch.export)."""
    return torch.maximum(x[..., 0::2], F.pad(x, (0, 1), value=float("-inf"))[..., 1::2])


class SequenceCNNClassifier(ClassifierCore):
    """(B, T) token ids padded with pad_id -> class logits (B, num_classes).

    Embedding, then conv stages (same-padded convolution, batch norm, ReLU; each stage but the last halves
    the length with a max pool), then the max (or mean) over each sequence's real positions, dropout and a
    linear layer. The first stage's filters are motif detectors (a position weight matrix is a 1-D filter
    over one-hot letters, DeepBind: Alipanahi et al., 2015); the later ones combine motifs at wider range.
    Padding is zeroed after every stage, so appended padding changes nothing (in eval mode).

    Args:
        vocab_size: vocabulary size; from the datamodule.
        num_classes: number of classes; from the datamodule.
        pad_id: padding id; from the datamodule.
        embed_dim: token embedding size (for 4 DNA letters, a handful is a learned one-hot).
        channels: filters of each conv stage.
        kernel_size: odd width of the first stage's filters, in tokens (a motif's length, ~8-20 letters).
        later_kernel_size: odd width of the filters of the later stages.
        batch_norm: batch norm after every convolution.
        dropout: dropout before the linear layer, and between stages.
        pooling: "max" (is the motif anywhere?) or "mean" (how much of it?) over the real positions.
    """

    def __init__(
        self,
        vocab_size: int = 1000,
        num_classes: int = 2,
        pad_id: int = 0,
        embed_dim: int = 16,
        channels: Sequence[int] = (64, 64),
        kernel_size: int = 15,
        later_kernel_size: int = 5,
        batch_norm: bool = True,
        dropout: float = 0.2,
        pooling: Literal["max", "mean"] = "max",
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        check_range("dropout", dropout, 0.0, 0.999)
        for width in (embed_dim, *channels, kernel_size, later_kernel_size):
            check_range("embed_dim, channels and kernel sizes", width, 1)
        if not channels:
            raise ConfigError("channels needs at least one conv stage, e.g. [64, 64]")
        if kernel_size % 2 == 0 or later_kernel_size % 2 == 0:
            raise ConfigError(f"kernel sizes must be odd to keep the length, got {kernel_size}, {later_kernel_size}")
        self.pad_id = pad_id
        self.pooling = pooling
        self.embedding = nn.Embedding(vocab_size, embed_dim, padding_idx=pad_id)
        self.stages = nn.ModuleList()
        in_channels = embed_dim
        for index, out_channels in enumerate(channels):
            width = kernel_size if index == 0 else later_kernel_size
            layers: list[nn.Module] = [
                nn.Conv1d(in_channels, out_channels, width, padding=width // 2, bias=not batch_norm)
            ]
            if batch_norm:
                layers.append(nn.BatchNorm1d(out_channels))
            layers.append(nn.ReLU(inplace=True))
            self.stages.append(nn.Sequential(*layers))
            in_channels = out_channels
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(in_channels, num_classes)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        real = (tokens != self.pad_id).unsqueeze(1)  # (B, 1, T)
        x = self.embedding(tokens).transpose(1, 2)  # (B, embed_dim, T): channels first for Conv1d
        for index, stage in enumerate(self.stages):
            if index > 0:  # halve the length, keeping a last odd position, as without padding
                x = self.dropout(halve(x))
                real = halve(real.float()).bool()
            x = stage(x) * real  # (B, C, T'): padding back to 0, so the next convolution sees zeros there
        # After ReLU every value is >= 0, so the zeros at padding never win the max.
        pooled = x.amax(2) if self.pooling == "max" else x.sum(2) / real.sum(2).clamp(min=1)  # (B, C)
        return self.head(self.dropout(pooled))  # (B, num_classes)
