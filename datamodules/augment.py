"""Batched image augmentation on whatever device the batch is on: no per-sample Python work."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def random_crop(images: torch.Tensor, padding: int) -> torch.Tensor:
    """Zero-pad each side by `padding`, then crop every image back at its own random offset. (B, C, H, W)."""
    batch, channels, height, width = images.shape
    padded = F.pad(images, (padding, padding, padding, padding))
    top = torch.randint(0, 2 * padding + 1, (batch, 1, 1, 1), device=images.device)
    left = torch.randint(0, 2 * padding + 1, (batch, 1, 1, 1), device=images.device)
    rows = top + torch.arange(height, device=images.device).view(1, 1, height, 1)  # (B, 1, H, 1)
    cols = left + torch.arange(width, device=images.device).view(1, 1, 1, width)  # (B, 1, 1, W)
    batch_index = torch.arange(batch, device=images.device).view(batch, 1, 1, 1)
    channel_index = torch.arange(channels, device=images.device).view(1, channels, 1, 1)
    return padded[batch_index, channel_index, rows, cols]


def random_hflip(images: torch.Tensor) -> torch.Tensor:
    """Mirror a random half of the images left-right. (B, C, H, W)."""
    flip = torch.rand(images.shape[0], 1, 1, 1, device=images.device) < 0.5
    return torch.where(flip, images.flip(-1), images)
