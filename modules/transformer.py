"""Transformer cores built on `scaled_dot_product_attention`, pre-norm blocks (no Lightning here).

Masks are boolean and broadcast to (B, heads, T_query, T_key); True means "may attend".
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from modules.positional import PositionalEncoding, PositionalKind


def key_padding_mask(tokens: torch.Tensor, pad_id: int) -> torch.Tensor:
    """(B, S) token ids -> (B, 1, 1, S): True at real tokens, so padding is never attended to."""
    return (tokens != pad_id)[:, None, None, :]


def causal_mask(length: int, device: torch.device) -> torch.Tensor:
    """(T, T): position t may attend to positions <= t."""
    return torch.ones(length, length, dtype=torch.bool, device=device).tril()


class Attention(nn.Module):
    """Multi-head attention; self-attention when `context` is None, else cross-attention to `context`."""

    def __init__(self, dim: int, num_heads: int, dropout: float) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} must be divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.dropout = dropout
        self.query = nn.Linear(dim, dim)
        self.key_value = nn.Linear(dim, 2 * dim)
        self.out = nn.Linear(dim, dim)

    @torch.no_grad()
    def weights(
        self,
        x: torch.Tensor,
        context: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
        causal: bool = False,
    ) -> torch.Tensor:
        """The attention probabilities that `forward` applies, (B, H, T, S), written out for inspection
        (the fused kernel never materialises them)."""
        context = x if context is None else context
        B, T, D = x.shape
        S, H = context.shape[1], self.num_heads
        q = self.query(x).view(B, T, H, D // H).transpose(1, 2)
        k = self.key_value(context).view(B, S, 2, H, D // H)[:, :, 0].transpose(1, 2)
        scores = q @ k.transpose(-2, -1) / math.sqrt(D // H)  # (B, H, T, S)
        if causal:
            scores = scores.masked_fill(~causal_mask(T, x.device), float("-inf"))
        if mask is not None:
            scores = scores.masked_fill(~mask, float("-inf"))
        return scores.softmax(-1)

    def forward(
        self,
        x: torch.Tensor,
        context: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
        causal: bool = False,
    ) -> torch.Tensor:
        context = x if context is None else context
        B, T, D = x.shape
        S, H = context.shape[1], self.num_heads
        q = self.query(x).view(B, T, H, D // H).transpose(1, 2)  # (B, H, T, hs)
        k, v = self.key_value(context).view(B, S, 2, H, D // H).permute(2, 0, 3, 1, 4)  # 2 x (B, H, S, hs)
        if causal and mask is not None:
            mask = mask & causal_mask(T, x.device)
        y = F.scaled_dot_product_attention(
            q,
            k,
            v,
            attn_mask=mask,
            dropout_p=self.dropout if self.training else 0.0,
            is_causal=causal and mask is None,
        )  # (B, H, T, hs)
        return self.out(y.transpose(1, 2).reshape(B, T, D))


class Block(nn.Module):
    """Pre-norm block: x + attn(norm(x)) [+ cross_attn(norm(x), memory)] + mlp(norm(x))."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: int, dropout: float, cross_attention: bool) -> None:
        super().__init__()
        self.norm_attention = nn.LayerNorm(dim)
        self.attention = Attention(dim, num_heads, dropout)
        self.norm_cross = nn.LayerNorm(dim) if cross_attention else None
        self.cross_attention = Attention(dim, num_heads, dropout) if cross_attention else None
        self.norm_mlp = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(
            nn.Linear(dim, mlp_ratio * dim), nn.GELU(), nn.Linear(mlp_ratio * dim, dim), nn.Dropout(dropout)
        )
        self.dropout = nn.Dropout(dropout)

    def forward(
        self,
        x: torch.Tensor,
        mask: torch.Tensor | None = None,
        causal: bool = False,
        memory: torch.Tensor | None = None,
        memory_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        x = x + self.dropout(self.attention(self.norm_attention(x), mask=mask, causal=causal))
        if self.cross_attention is not None and self.norm_cross is not None:
            x = x + self.dropout(self.cross_attention(self.norm_cross(x), context=memory, mask=memory_mask))
        return x + self.mlp(self.norm_mlp(x))


class TransformerStack(nn.Module):
    """Token embedding (scaled by sqrt(dim), as in Vaswani et al.) + positions + blocks + final norm.

    (B, T) token ids -> (B, T, dim) hidden states.
    """

    def __init__(
        self,
        vocab_size: int,
        dim: int,
        num_layers: int,
        num_heads: int,
        mlp_ratio: int,
        dropout: float,
        max_length: int,
        positional: PositionalKind,
        cross_attention: bool = False,
        embedding: nn.Embedding | None = None,
    ) -> None:
        super().__init__()
        self.embedding = embedding or nn.Embedding(vocab_size, dim)
        if embedding is None:
            nn.init.normal_(self.embedding.weight, std=dim**-0.5)
        self.scale = math.sqrt(dim)
        self.positions = PositionalEncoding(positional, max_length, dim)
        self.dropout = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(
            Block(dim, num_heads, mlp_ratio, dropout, cross_attention) for _ in range(num_layers)
        )
        self.norm = nn.LayerNorm(dim)

    def forward(
        self,
        tokens: torch.Tensor,
        mask: torch.Tensor | None = None,
        causal: bool = False,
        memory: torch.Tensor | None = None,
        memory_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        x = self.dropout(self.positions(self.embedding(tokens) * self.scale))  # (B, T, dim)
        for block in self.blocks:
            x = block(x, mask=mask, causal=causal, memory=memory, memory_mask=memory_mask)
        return self.norm(x)


class TransformerClassifierNet(nn.Module):
    """Encoder over (B, T) token ids with padding -> class logits (B, num_classes).

    pooling "mean" averages the real (non-padding) positions; "first" takes position 0 (a [CLS]/BOS token).
    """

    def __init__(
        self,
        vocab_size: int,
        num_classes: int,
        pad_id: int = 0,
        dim: int = 128,
        num_layers: int = 2,
        num_heads: int = 4,
        mlp_ratio: int = 4,
        dropout: float = 0.1,
        max_length: int = 512,
        positional: PositionalKind = "sinusoidal",
        pooling: Literal["mean", "first"] = "mean",
    ) -> None:
        super().__init__()
        self.pad_id = pad_id
        self.pooling = pooling
        self.encoder = TransformerStack(
            vocab_size, dim, num_layers, num_heads, mlp_ratio, dropout, max_length, positional
        )
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(dim, num_classes))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        real = tokens != self.pad_id  # (B, T)
        hidden = self.encoder(tokens, mask=real[:, None, None, :])  # (B, T, dim)
        if self.pooling == "first":
            pooled = hidden[:, 0]
        else:
            weights = real.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1.0)  # (B, dim)
        return self.head(pooled)


class TransformerLMNet(nn.Module):
    """Decoder-only language model: (B, T) ids -> next-token logits (B, T, vocab), causal, tied embeddings."""

    def __init__(
        self,
        vocab_size: int,
        dim: int = 256,
        num_layers: int = 4,
        num_heads: int = 4,
        mlp_ratio: int = 4,
        dropout: float = 0.1,
        max_length: int = 256,
        positional: PositionalKind = "sinusoidal",
    ) -> None:
        super().__init__()
        self.max_length = max_length
        self.decoder = TransformerStack(
            vocab_size, dim, num_layers, num_heads, mlp_ratio, dropout, max_length, positional
        )
        self.head = nn.Linear(dim, vocab_size, bias=False)
        self.head.weight = self.decoder.embedding.weight  # weight tying (Press & Wolf, 2017)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.head(self.decoder(tokens, causal=True))


class TransformerSeq2SeqNet(nn.Module):
    """Encoder-decoder over one shared vocabulary: (B, S) source, (B, T) target input -> (B, T, vocab).

    The decoder's input is the target shifted right (starting with BOS); in training it sees the true
    previous tokens (teacher forcing), in `greedy_decode` its own predictions.
    """

    def __init__(
        self,
        vocab_size: int,
        pad_id: int = 0,
        dim: int = 128,
        num_layers: int = 2,
        num_heads: int = 4,
        mlp_ratio: int = 4,
        dropout: float = 0.1,
        max_length: int = 128,
        positional: PositionalKind = "sinusoidal",
    ) -> None:
        super().__init__()
        self.pad_id = pad_id
        self.max_length = max_length
        args = (vocab_size, dim, num_layers, num_heads, mlp_ratio, dropout, max_length, positional)
        self.encoder = TransformerStack(*args)
        self.decoder = TransformerStack(*args, cross_attention=True, embedding=self.encoder.embedding)
        self.head = nn.Linear(dim, vocab_size, bias=False)
        self.head.weight = self.encoder.embedding.weight

    def encode(self, source: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mask = key_padding_mask(source, self.pad_id)
        return self.encoder(source, mask=mask), mask  # (B, S, dim), (B, 1, 1, S)

    def decode(self, target_in: torch.Tensor, memory: torch.Tensor, memory_mask: torch.Tensor) -> torch.Tensor:
        mask = key_padding_mask(target_in, self.pad_id)
        hidden = self.decoder(target_in, mask=mask, causal=True, memory=memory, memory_mask=memory_mask)
        return self.head(hidden)  # (B, T, vocab)

    def forward(self, source: torch.Tensor, target_in: torch.Tensor) -> torch.Tensor:
        return self.decode(target_in, *self.encode(source))

    @torch.no_grad()
    def greedy_decode(self, source: torch.Tensor, bos_id: int, eos_id: int, max_new_tokens: int) -> torch.Tensor:
        """(B, S) -> (B, L) generated ids without BOS, padded with pad_id after each sequence's EOS."""
        memory, memory_mask = self.encode(source)
        output = torch.full((len(source), 1), bos_id, dtype=torch.long, device=source.device)
        finished = torch.zeros(len(source), dtype=torch.bool, device=source.device)
        for _ in range(min(max_new_tokens, self.max_length - 1)):
            next_token = self.decode(output, memory, memory_mask)[:, -1].argmax(-1)
            next_token = torch.where(finished, torch.full_like(next_token, self.pad_id), next_token)
            output = torch.cat([output, next_token[:, None]], dim=1)
            finished |= next_token == eos_id
            if finished.all():
                break
        return output[:, 1:]
