"""Position information for Transformers: the sinusoidal encoding of Vaswani et al. (2017) or a learned table."""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import nn

PositionalKind = Literal["sinusoidal", "learned"]


def sinusoidal_encoding(length: int, dim: int) -> torch.Tensor:
    """PE[pos, 2i] = sin(pos / 10000^(2i/dim)), PE[pos, 2i+1] = cos(pos / 10000^(2i/dim)). Shape (length, dim)."""
    if dim % 2:
        raise ValueError(f"the sinusoidal encoding needs an even model dimension, got {dim}")
    positions = torch.arange(length, dtype=torch.float64).unsqueeze(1)  # (length, 1)
    inverse_frequencies = torch.exp(-math.log(10000.0) * torch.arange(0, dim, 2, dtype=torch.float64) / dim)
    angles = positions * inverse_frequencies  # (length, dim / 2)
    encoding = torch.empty(length, dim, dtype=torch.float64)
    encoding[:, 0::2] = torch.sin(angles)
    encoding[:, 1::2] = torch.cos(angles)
    return encoding.float()


class PositionalEncoding(nn.Module):
    """Adds position vectors to token embeddings (B, T, D), one per position 0..T-1, up to `max_length`."""

    def __init__(self, kind: PositionalKind, max_length: int, dim: int) -> None:
        super().__init__()
        self.max_length = max_length
        self.table: torch.Tensor | None
        self.learned = nn.Embedding(max_length, dim) if kind == "learned" else None
        # Not saved in checkpoints: it is recomputed exactly from the formula.
        self.register_buffer("table", None if self.learned else sinusoidal_encoding(max_length, dim), persistent=False)

    def forward(self, x: torch.Tensor, offset: int = 0) -> torch.Tensor:
        length = x.shape[1]
        if offset + length > self.max_length:
            raise ValueError(f"sequence of {offset + length} positions exceeds max_length {self.max_length}")
        if self.learned is not None:
            return x + self.learned(torch.arange(offset, offset + length, device=x.device))
        assert self.table is not None
        return x + self.table[offset : offset + length].to(x.dtype)
