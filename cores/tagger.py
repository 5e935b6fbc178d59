"""Sequence taggers: a tag's logits for every token of a sentence, read in both directions.

RNNTagger          embeddings -> bidirectional LSTM/GRU over the real tokens -> a linear layer per position
TransformerTagger  embeddings + positions -> encoder blocks (padding never attended to) -> a linear layer
"""

from __future__ import annotations

import torch
from torch import nn

from cores.contracts import TaggerCore
from cores.dropout import WordDropout
from cores.positional import PositionalKind
from cores.recurrent import CellKind, RecurrentEncoder
from cores.transformer import TransformerStack
from validation import check_range


class RNNTagger(TaggerCore):
    """(B, T) token ids padded with pad_id -> tag logits (B, T, num_classes), from a stacked (bi)LSTM/GRU read
    over each sentence's real tokens only (packed: padding never enters the recurrence).

    Args:
        vocab_size: vocabulary size; from the datamodule.
        num_classes: number of tags; from the datamodule.
        pad_id: padding id; from the datamodule.
        embed_dim: token embedding size.
        hidden_dim: recurrent state size per direction.
        num_layers: stacked recurrent layers.
        cell: "lstm" or "gru".
        bidirectional: read the sentence both ways (a tag depends on the words after it too).
        dropout: dropout on the embeddings, between layers and before the output layer.
        word_dropout: probability of hiding a whole token (its embedding zeroed) in training, so the model
            learns to tag a word it has not seen by its context.
    """

    def __init__(
        self,
        vocab_size: int = 1000,
        num_classes: int = 2,
        pad_id: int = 0,
        embed_dim: int = 128,
        hidden_dim: int = 128,
        num_layers: int = 2,
        cell: CellKind = "lstm",
        bidirectional: bool = True,
        dropout: float = 0.3,
        word_dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        check_range("dropout", dropout, 0.0, 0.999)
        check_range("word_dropout", word_dropout, 0.0, 0.999)
        self.pad_id = pad_id
        self.embedding = nn.Embedding(vocab_size, embed_dim, padding_idx=pad_id)
        self.word_dropout = WordDropout(word_dropout)
        self.dropout = nn.Dropout(dropout)
        self.encoder = RecurrentEncoder(embed_dim, hidden_dim, num_layers, cell, bidirectional, dropout)
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(self.encoder.output_dim, num_classes))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        lengths = (tokens != self.pad_id).sum(1).clamp(min=1)  # (B,)
        embedded = self.dropout(self.word_dropout(self.embedding(tokens)))  # (B, T, embed_dim)
        outputs, _, _ = self.encoder(embedded, lengths)  # (B, T, dirs * hidden_dim), 0 at padding
        return self.head(outputs)


class TransformerTagger(TaggerCore):
    """Encoder over (B, T) token ids padded with pad_id -> tag logits (B, T, num_classes); every position
    attends to the whole sentence, padding never.

    Args:
        vocab_size: vocabulary size; from the datamodule.
        num_classes: number of tags; from the datamodule.
        pad_id: padding id; from the datamodule.
        dim: model width.
        num_layers: encoder blocks.
        num_heads: attention heads (must divide dim).
        mlp_ratio: width of each block's MLP, in multiples of dim.
        dropout: dropout probability.
        max_length: longest sentence, in tokens.
        positional: "sinusoidal" (Vaswani et al.) or "learned".
        word_dropout: probability of hiding a whole token (its embedding zeroed) in training.
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
        word_dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        check_range("dropout", dropout, 0.0, 0.999)
        check_range("word_dropout", word_dropout, 0.0, 0.999)
        self.pad_id = pad_id
        args = (vocab_size, dim, num_layers, num_heads, mlp_ratio, dropout, max_length, positional)
        self.encoder = TransformerStack(*args, word_dropout=word_dropout)
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(dim, num_classes))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        real = tokens != self.pad_id  # (B, T)
        return self.head(self.encoder(tokens, mask=real[:, None, None, :]))  # (B, T, num_classes)
