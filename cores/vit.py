"""A Vision Transformer (Dosovitskiy et al., 2021) sized for small images. No Lightning here."""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from cores.contracts import ClassifierCore
from cores.transformer import Block
from validation import ConfigError, check_range


class ViTClassifier(ClassifierCore):
    """Images (B, C, H, W) -> class logits (B, num_classes): non-overlapping patches, each projected to a
    token of width `dim`, plus learned positions -> pre-norm Transformer blocks -> pooled -> logits.

    Args:
        image_shape: (channels, height, width) of the input; from the datamodule.
        num_classes: number of classes; from the datamodule.
        patch_size: side of the square patches; must divide height and width (28x28 and 4: 49 tokens).
        dim: model width.
        num_layers: Transformer blocks.
        num_heads: attention heads (must divide dim).
        mlp_ratio: width of each block's MLP, in multiples of dim.
        dropout: dropout probability.
        pooling: "mean" over the patch tokens, or "cls" (a learned class token, as in the paper).
    """

    def __init__(
        self,
        image_shape: tuple[int, int, int] = (1, 28, 28),
        num_classes: int = 10,
        patch_size: int = 4,
        dim: int = 128,
        num_layers: int = 4,
        num_heads: int = 4,
        mlp_ratio: int = 2,
        dropout: float = 0.1,
        pooling: Literal["mean", "cls"] = "mean",
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        check_range("dropout", dropout, 0.0, 0.999)
        check_range("patch_size", patch_size, 1)
        channels, height, width = image_shape
        if height % patch_size or width % patch_size:
            raise ConfigError(f"patch_size {patch_size} must divide the image's height and width ({height}x{width})")
        if dim % num_heads:
            raise ConfigError(f"dim {dim} must be divisible by num_heads {num_heads}")
        self.pooling = pooling
        self.patches = nn.Conv2d(channels, dim, patch_size, stride=patch_size)  # (B, dim, H/p, W/p)
        tokens = (height // patch_size) * (width // patch_size) + (pooling == "cls")
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim)) if pooling == "cls" else None
        self.positions = nn.Parameter(torch.randn(1, tokens, dim) * 0.02)
        self.dropout = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(Block(dim, num_heads, mlp_ratio, dropout, False) for _ in range(num_layers))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.patches(images).flatten(2).transpose(1, 2)  # (B, patches, dim)
        if self.cls_token is not None:
            x = torch.cat([self.cls_token.expand(len(x), -1, -1), x], dim=1)
        x = self.dropout(x + self.positions)
        for block in self.blocks:
            x = block(x)
        x = self.norm(x)
        pooled = x[:, 0] if self.cls_token is not None else x.mean(1)  # (B, dim)
        return self.head(pooled)
