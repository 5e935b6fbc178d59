"""Recurrent cores: stacked, optionally bidirectional LSTM/GRU over packed variable-length sequences."""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from cores.contracts import ClassifierCore, ForecasterCore, LanguageModelCore, Seq2SeqCore
from cores.dropout import WordDropout
from cores.ngrams import NgramLogits
from cores.pooling import pool
from cores.sampling import sample_next
from validation import ConfigError, check_range

CellKind = Literal["lstm", "gru"]
State = torch.Tensor | tuple[torch.Tensor, torch.Tensor]  # GRU: h; LSTM: (h, c); each (layers * dirs, B, H)


class RecurrentEncoder(nn.Module):
    """(B, T, input_dim) -> outputs (B, T, dirs * hidden_dim), final (B, dirs * hidden_dim), state.

    With `lengths`, sequences are packed so padding never enters the recurrence: `final` is the state
    after each sequence's own last element (and, backwards, after its first).
    """

    def __init__(
        self,
        input_dim: int,
        hidden_dim: int,
        num_layers: int = 1,
        cell: CellKind = "lstm",
        bidirectional: bool = False,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        rnn = nn.LSTM if cell == "lstm" else nn.GRU
        self.rnn = rnn(
            input_dim,
            hidden_dim,
            num_layers,
            batch_first=True,
            bidirectional=bidirectional,
            dropout=dropout if num_layers > 1 else 0.0,  # between layers only
        )
        self.directions = 2 if bidirectional else 1
        self.output_dim = self.directions * hidden_dim

    def forward(
        self, x: torch.Tensor, lengths: torch.Tensor | None = None, state: State | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, State]:
        if lengths is None:
            outputs, state = self.rnn(x, state)
        else:
            packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
            packed_outputs, state = self.rnn(packed, state)
            outputs, _ = pad_packed_sequence(packed_outputs, batch_first=True, total_length=x.shape[1])
        hidden = state[0] if isinstance(state, tuple) else state  # (layers * dirs, B, H)
        final = torch.cat(list(hidden[-self.directions :]), dim=-1)  # last layer, all directions: (B, dirs * H)
        return outputs, final, state


class RNNClassifier(ClassifierCore):
    """(B, T) token ids padded with pad_id -> class logits (B, num_classes), from a (bi)LSTM/GRU read over
    each text's real tokens only: its final state, or its outputs pooled over the real positions.

    Args:
        vocab_size: vocabulary size; from the datamodule.
        num_classes: number of classes; from the datamodule.
        pad_id: padding id; from the datamodule.
        embed_dim: token embedding size.
        hidden_dim: recurrent state size per direction.
        num_layers: stacked recurrent layers.
        cell: "lstm" or "gru".
        bidirectional: read the text both ways.
        dropout: dropout between layers and before the classifier.
        word_dropout: probability of hiding a whole token (its embedding zeroed) in training.
        pooling: "final" state (both directions' ends), or "max" / "mean" of the outputs over real tokens.
        ngram_buckets: with > 0, a linear model over the text's unigrams and its bigrams hashed into this
            many buckets adds to the logits (`cores.ngrams.NgramLogits`).
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
        word_dropout: float = 0.0,
        pooling: Literal["final", "max", "mean"] = "final",
        ngram_buckets: int = 0,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        check_range("dropout", dropout, 0.0, 0.999)
        check_range("word_dropout", word_dropout, 0.0, 0.999)
        self.pad_id = pad_id
        self.pooling = pooling
        self.embedding = nn.Embedding(vocab_size, embed_dim, padding_idx=pad_id)
        self.word_dropout = WordDropout(word_dropout)
        self.encoder = RecurrentEncoder(embed_dim, hidden_dim, num_layers, cell, bidirectional, dropout)
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(self.encoder.output_dim, num_classes))
        check_range("ngram_buckets", ngram_buckets, 0)
        self.ngrams = NgramLogits(vocab_size, num_classes, ngram_buckets, pad_id) if ngram_buckets else None

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        real = tokens != self.pad_id  # (B, T)
        lengths = real.sum(1).clamp(min=1)  # (B,)
        outputs, final, _ = self.encoder(self.word_dropout(self.embedding(tokens)), lengths)
        logits = self.head(pool(outputs, real, self.pooling) if self.pooling != "final" else final)
        return logits if self.ngrams is None else logits + self.ngrams(tokens)


class RNNLanguageModel(LanguageModelCore):
    """Stacked LSTM/GRU language model: (B, T) ids -> next-token logits (B, T, vocab_size).

    Args:
        vocab_size: vocabulary size; from the datamodule.
        embed_dim: token embedding size.
        hidden_dim: recurrent state size.
        num_layers: stacked recurrent layers.
        cell: "lstm" or "gru".
        dropout: dropout on embeddings, between layers and before the output layer.
        tie_weights: share the embedding matrix with the output layer (through a projection when
            hidden_dim differs from embed_dim).
    """

    def __init__(
        self,
        vocab_size: int = 256,
        embed_dim: int = 128,
        hidden_dim: int = 256,
        num_layers: int = 2,
        cell: CellKind = "lstm",
        dropout: float = 0.2,
        tie_weights: bool = True,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        check_range("dropout", dropout, 0.0, 0.999)
        self.embedding = nn.Embedding(vocab_size, embed_dim)
        self.encoder = RecurrentEncoder(embed_dim, hidden_dim, num_layers, cell, False, dropout)
        self.dropout = nn.Dropout(dropout)
        out_dim = embed_dim if tie_weights else hidden_dim
        self.project = nn.Linear(hidden_dim, embed_dim) if tie_weights and hidden_dim != embed_dim else nn.Identity()
        self.head = nn.Linear(out_dim, vocab_size)
        if tie_weights:
            self.head.weight = self.embedding.weight

    def step(self, tokens: torch.Tensor, state: State | None = None) -> tuple[torch.Tensor, State]:
        """(B, T) ids continuing from `state` -> logits (B, T, vocab_size) and the state after them."""
        outputs, _, state = self.encoder(self.dropout(self.embedding(tokens)), state=state)
        return self.head(self.project(self.dropout(outputs))), state

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.step(tokens)[0]

    @torch.no_grad()
    def generate(
        self, prompt: torch.Tensor, max_new_tokens: int, temperature: float = 1.0, top_k: int | None = None
    ) -> torch.Tensor:
        """(B, T) prompt ids -> (B, T + max_new_tokens), carrying the recurrent state token by token."""
        logits, state = self.step(prompt)
        tokens = prompt
        for _ in range(max_new_tokens):
            next_token = sample_next(logits[:, -1], temperature, top_k)[:, None]
            tokens = torch.cat([tokens, next_token], dim=1)
            logits, state = self.step(next_token, state)
        return tokens


class RNNForecaster(ForecasterCore):
    """(B, T, num_features) window -> (B, horizon, num_features) forecast.

    Args:
        num_features: values per time step; from the datamodule.
        horizon: future steps predicted; from the datamodule.
        hidden_dim: recurrent state size.
        num_layers: stacked recurrent layers.
        cell: "lstm" or "gru".
        dropout: dropout between recurrent layers.
        residual: predict the change from the last observed value, so an untrained model starts as the
            naive "repeat the last value" forecast and only has to learn the difference.
    """

    def __init__(
        self,
        num_features: int = 1,
        horizon: int = 1,
        hidden_dim: int = 64,
        num_layers: int = 2,
        cell: CellKind = "lstm",
        dropout: float = 0.1,
        residual: bool = True,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        check_range("dropout", dropout, 0.0, 0.999)
        self.horizon = horizon
        self.num_features = num_features
        self.residual = residual
        self.encoder = RecurrentEncoder(num_features, hidden_dim, num_layers, cell, False, dropout)
        self.head = nn.Linear(hidden_dim, horizon * num_features)
        if residual:  # start exactly at the naive forecast
            nn.init.zeros_(self.head.weight)
            nn.init.zeros_(self.head.bias)

    def forward(self, window: torch.Tensor) -> torch.Tensor:
        _, final, _ = self.encoder(window)
        forecast = self.head(final).view(-1, self.horizon, self.num_features)
        return forecast + window[:, -1:, :] if self.residual else forecast


class RNNSeq2Seq(Seq2SeqCore):
    """Recurrent encoder-decoder with attention (Luong et al., 2015) over one shared vocabulary.

    A bidirectional LSTM/GRU reads the source; the decoder, started from the encoder's final states, reads
    the target shifted right; each decoder output attends (scaled dot product, padding masked) to the
    encoder's outputs, and [output; context] -> tanh layer -> vocabulary logits. Attention comes after the
    recurrence, so teacher-forced training runs the decoder over the whole target in one call.

    Args:
        vocab_size: vocabulary size (shared by source and target); from the datamodule.
        pad_id: padding id; from the datamodule.
        embed_dim: token embedding size (shared by encoder, decoder and the tied output layer).
        hidden_dim: recurrent state size (each encoder direction: hidden_dim // 2).
        num_layers: stacked recurrent layers of the encoder and of the decoder.
        cell: "lstm" or "gru".
        dropout: dropout on embeddings, between layers and before the output layer.
        max_length: longest output that greedy decoding writes, in tokens.
    """

    def __init__(
        self,
        vocab_size: int = 16,
        pad_id: int = 0,
        embed_dim: int = 64,
        hidden_dim: int = 128,
        num_layers: int = 1,
        cell: CellKind = "gru",
        dropout: float = 0.1,
        max_length: int = 128,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        check_range("dropout", dropout, 0.0, 0.999)
        check_range("hidden_dim", hidden_dim, 2)
        if hidden_dim % 2:
            raise ConfigError(f"hidden_dim must be even (half of it reads each direction), got {hidden_dim}")
        self.pad_id = pad_id
        self.max_length = max_length
        self.embedding = nn.Embedding(vocab_size, embed_dim, padding_idx=pad_id)
        self.encoder = RecurrentEncoder(embed_dim, hidden_dim // 2, num_layers, cell, True, dropout)
        self.decoder = RecurrentEncoder(embed_dim, hidden_dim, num_layers, cell, False, dropout)
        self.dropout = nn.Dropout(dropout)
        self.combine = nn.Linear(2 * hidden_dim, embed_dim)
        self.head = nn.Linear(embed_dim, vocab_size)
        self.head.weight = self.embedding.weight

    def encode(self, source: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, State]:
        """(B, S) -> encoder outputs (B, S, hidden_dim), padding mask (B, 1, S), the decoder's first state."""
        real = source != self.pad_id
        outputs, _, state = self.encoder(self.dropout(self.embedding(source)), real.sum(1).clamp(min=1))
        return outputs, real[:, None, :], self.merge_directions(state)

    @staticmethod
    def merge_directions(state: State) -> State:
        """(layers * 2, B, H/2) per direction -> (layers, B, H): each layer's forward and backward halves."""

        def merge(h: torch.Tensor) -> torch.Tensor:
            layers2, batch, half = h.shape
            return h.view(layers2 // 2, 2, batch, half).permute(0, 2, 1, 3).reshape(layers2 // 2, batch, 2 * half)

        return (merge(state[0]), merge(state[1])) if isinstance(state, tuple) else merge(state)

    def decode(self, target_in: torch.Tensor, memory: tuple[torch.Tensor, torch.Tensor, State]) -> torch.Tensor:
        source_states, source_mask, state = memory
        outputs, _, _ = self.decoder(self.dropout(self.embedding(target_in)), state=state)  # (B, T, H)
        scores = outputs @ source_states.transpose(1, 2) / source_states.shape[-1] ** 0.5  # (B, T, S)
        weights = scores.masked_fill(~source_mask, float("-inf")).softmax(-1)
        context = weights @ source_states  # (B, T, H)
        combined = torch.tanh(self.combine(torch.cat([outputs, context], dim=-1)))
        return self.head(self.dropout(combined))  # (B, T, vocab)
