"""Batched image augmentation on whatever device the batch is on: no per-sample Python work."""

from __future__ import annotations

import math

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


def random_erase(
    images: torch.Tensor, probability: float, area: tuple[float, float] = (0.02, 0.33), aspect: float = 3.3
) -> torch.Tensor:
    """Random erasing (Zhong et al. 2020): in each image with chance `probability`, one rectangle of `area` of the
    image (a share, drawn uniformly) and aspect ratio between 1/aspect and aspect (log-uniform) is set to zero:
    black pixels, as the crop's padding. (B, C, H, W), each image its own rectangle."""
    batch, _, height, width = images.shape
    device = images.device
    share = torch.empty(batch, device=device).uniform_(*area) * height * width  # (B,) pixels
    ratio = torch.empty(batch, device=device).uniform_(-math.log(aspect), math.log(aspect)).exp()
    tall = (share * ratio).sqrt().round().clamp(1, height)
    wide = (share / ratio).sqrt().round().clamp(1, width)
    top = (torch.rand(batch, device=device) * (height - tall + 1)).floor()
    left = (torch.rand(batch, device=device) * (width - wide + 1)).floor()
    rows = torch.arange(height, device=device).view(1, height, 1)
    cols = torch.arange(width, device=device).view(1, 1, width)
    across = (rows >= top.view(-1, 1, 1)) & (rows < (top + tall).view(-1, 1, 1))  # (B, H, 1)
    along = (cols >= left.view(-1, 1, 1)) & (cols < (left + wide).view(-1, 1, 1))  # (B, 1, W)
    chosen = (torch.rand(batch, device=device) < probability).view(-1, 1, 1)
    inside = across & along & chosen  # (B, H, W)
    return images.masked_fill(inside.unsqueeze(1), 0)
