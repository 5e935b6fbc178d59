"""Text classifiers: an LSTM/GRU and a Transformer encoder over token ids, trained as classification tasks."""

from __future__ import annotations

from typing import Any, Literal

import torch

from modules.classification import ClassificationTask
from modules.positional import PositionalKind
from modules.recurrent import CellKind, RecurrentClassifierNet
from modules.task import check_range
from modules.transformer import TransformerClassifierNet


class RNNClassifier(ClassificationTask):
    """(B, T) token ids padded with pad_id -> class logits, from the final state of a (bi)LSTM/GRU.

    Args:
        vocab_size: vocabulary size; linked from the datamodule.
        num_classes: number of classes; linked from the datamodule.
        pad_id: padding id; linked from the datamodule.
        embed_dim: token embedding size.
        hidden_dim: recurrent state size per direction.
        num_layers: stacked recurrent layers.
        cell: "lstm" or "gru".
        bidirectional: read the text both ways.
        dropout: dropout on embeddings' outputs between layers and before the classifier.
        label_smoothing: cross-entropy label smoothing.
        **task_options: optimizer, schedule and penalty settings (see `TaskModule`).
    """

    def __init__(
        self,
        vocab_size: int = 1000,
        num_classes: int = 2,
        pad_id: int = 0,
        embed_dim: int = 128,
        hidden_dim: int = 128,
        num_layers: int = 1,
        cell: CellKind = "lstm",
        bidirectional: bool = True,
        dropout: float = 0.2,
        label_smoothing: float = 0.0,
        **task_options: Any,
    ) -> None:
        super().__init__(num_classes=num_classes, label_smoothing=label_smoothing, **task_options)
        check_range("dropout", dropout, 0.0, 0.999)
        self.save_hyperparameters(logger=False)
        self.net = RecurrentClassifierNet(
            vocab_size, num_classes, pad_id, embed_dim, hidden_dim, num_layers, cell, bidirectional, dropout
        )

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.net(tokens)


class TransformerClassifier(ClassificationTask):
    """(B, T) token ids padded with pad_id -> class logits, from a Transformer encoder with a padding mask.

    Args:
        vocab_size: vocabulary size; linked from the datamodule.
        num_classes: number of classes; linked from the datamodule.
        pad_id: padding id; linked from the datamodule.
        dim: model width.
        num_layers: encoder blocks.
        num_heads: attention heads (must divide dim).
        mlp_ratio: width of each block's MLP, in multiples of dim.
        dropout: dropout probability.
        max_length: longest input, in tokens.
        positional: "sinusoidal" (Vaswani et al.) or "learned".
        pooling: "mean" over real tokens, or "first" (the <bos> token).
        label_smoothing: cross-entropy label smoothing.
        **task_options: optimizer, schedule and penalty settings (see `TaskModule`).
    """

    def __init__(
        self,
        vocab_size: int = 1000,
        num_classes: int = 2,
        pad_id: int = 0,
        dim: int = 128,
        num_layers: int = 2,
        num_heads: int = 4,
        mlp_ratio: int = 4,
        dropout: float = 0.1,
        max_length: int = 512,
        positional: PositionalKind = "sinusoidal",
        pooling: Literal["mean", "first"] = "mean",
        label_smoothing: float = 0.0,
        **task_options: Any,
    ) -> None:
        super().__init__(num_classes=num_classes, label_smoothing=label_smoothing, **task_options)
        check_range("dropout", dropout, 0.0, 0.999)
        self.save_hyperparameters(logger=False)
        self.net = TransformerClassifierNet(
            vocab_size,
            num_classes,
            pad_id,
            dim,
            num_layers,
            num_heads,
            mlp_ratio,
            dropout,
            max_length,
            positional,
            pooling,
        )

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.net(tokens)
