"""A recurrent classifier over the time frames of a spectrogram (or any (C, H, W) input read along W).
No Lightning here."""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from cores.contracts import ClassifierCore
from cores.pooling import pool
from cores.recurrent import CellKind, RecurrentEncoder
from validation import ConfigError, check_range


class FrameRNNClassifier(ClassifierCore):
    """Spectrograms (B, C, n_mels, frames) -> class logits (B, num_classes): each time step is a frame's
    C * n_mels values (`frame_stack` adjacent frames side by side, as speech recognisers stack them to
    shorten the sequence), layer-normed, read by a (bi)LSTM/GRU, its outputs pooled over time -> logits.

    Args:
        image_shape: (channels, mel bands, frames) of the input; from the datamodule.
        num_classes: number of classes; from the datamodule.
        frame_stack: frames per time step (100 frames and 2: 50 steps of 2 frames); frames left over at the
            end are dropped.
        hidden_dim: recurrent state size per direction.
        num_layers: stacked recurrent layers.
        cell: "lstm" or "gru".
        bidirectional: read the clip both ways.
        dropout: dropout between layers and before the classifier.
        pooling: "final" state (both directions' ends), or "max" / "mean" of the outputs over time.
    """

    def __init__(
        self,
        image_shape: tuple[int, int, int] = (1, 40, 100),
        num_classes: int = 10,
        frame_stack: int = 1,
        hidden_dim: int = 128,
        num_layers: int = 2,
        cell: CellKind = "lstm",
        bidirectional: bool = True,
        dropout: float = 0.1,
        pooling: Literal["final", "max", "mean"] = "mean",
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        check_range("dropout", dropout, 0.0, 0.999)
        check_range("frame_stack", frame_stack, 1)
        channels, bands, frames = image_shape
        if frame_stack > frames:
            raise ConfigError(f"frame_stack {frame_stack} is more than the input's {frames} frames")
        self.frame_stack = frame_stack
        self.pooling = pooling
        step_dim = channels * bands * frame_stack
        self.norm = nn.LayerNorm(step_dim)
        self.encoder = RecurrentEncoder(step_dim, hidden_dim, num_layers, cell, bidirectional, dropout)
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(self.encoder.output_dim, num_classes))

    def forward(self, spectrograms: torch.Tensor) -> torch.Tensor:
        B, C, H, W = spectrograms.shape
        steps = W // self.frame_stack
        frames = spectrograms[..., : steps * self.frame_stack].permute(0, 3, 1, 2)  # (B, W', C, H)
        x = self.norm(frames.reshape(B, steps, self.frame_stack * C * H))  # (B, steps, step_dim)
        outputs, final, _ = self.encoder(x)  # every step is real: clips have one length
        if self.pooling == "final":
            return self.head(final)
        return self.head(pool(outputs, torch.ones(B, steps, dtype=torch.bool, device=x.device), self.pooling))
