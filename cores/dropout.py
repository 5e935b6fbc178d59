"""Word dropout: whole tokens hidden from a text classifier during training."""

from __future__ import annotations

import torch
from torch import nn


class WordDropout(nn.Module):
    """(B, T, D) token embeddings -> the same with each token's whole vector zeroed with probability `p` in
    training (and the rest scaled by 1 / (1 - p)), so the classifier cannot lean on any single word
    (Iyyer et al., 2015; Gal & Ghahramani, 2016). Identity in evaluation."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p

    def forward(self, embedded: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return embedded
        keep = torch.empty((*embedded.shape[:2], 1), device=embedded.device).bernoulli_(1 - self.p)
        return embedded * keep.to(embedded.dtype) / (1 - self.p)
