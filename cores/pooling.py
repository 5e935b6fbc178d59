"""Pooling a sequence's outputs over its real (non-padding) positions into one vector per sequence."""

from __future__ import annotations

from typing import Literal

import torch

PoolingKind = Literal["max", "mean", "first"]


def pool(outputs: torch.Tensor, real: torch.Tensor, how: str) -> torch.Tensor:
    """(B, T, D) outputs, (B, T) True at real tokens -> (B, D): the "max" or "mean" over real positions, or
    the "first" position (a <bos>/[CLS] token)."""
    if how == "first":
        return outputs[:, 0]
    if how == "max":
        return outputs.masked_fill(~real.unsqueeze(-1), float("-inf")).amax(1)
    weights = real.unsqueeze(-1).to(outputs.dtype)
    return (outputs * weights).sum(1) / weights.sum(1).clamp(min=1.0)
