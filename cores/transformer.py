"""Transformer cores built on `scaled_dot_product_attention`, pre-norm blocks (no Lightning here).

Masks are boolean and broadcast to (B, heads, T_query, T_key); True means "may attend".
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from cores.contracts import ClassifierCore, LanguageModelCore, Seq2SeqCore
from cores.dropout import WordDropout
from cores.ngrams import NgramLogits
from cores.pooling import PoolingKind, pool
from cores.positional import PositionalEncoding, PositionalKind
from cores.sampling import sample_next
from validation import check_range


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
        cache: list[torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """The attention probabilities that `forward` applies, (B, H, T, S), written out for inspection
        (the fused kernel never materialises them); takes `forward`'s arguments, of a pass without `cache`."""
        if cache:
            raise ValueError("attention weights are computed for a whole sequence, not a cached position")
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
        cache: list[torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """`cache` (self-attention only): the keys and values of earlier positions, [(B, H, S, hs)] * 2,
        extended in place. Empty, it is filled from `x`; filled, `x` is one new position (T = 1), which
        attends to all of them and itself."""
        context = x if context is None else context
        B, T, D = x.shape
        S, H = context.shape[1], self.num_heads
        q = self.query(x).view(B, T, H, D // H).transpose(1, 2)  # (B, H, T, hs)
        k, v = self.key_value(context).view(B, S, 2, H, D // H).permute(2, 0, 3, 1, 4)  # 2 x (B, H, S, hs)
        if cache is not None:
            if cache:  # a new position after those cached: nothing later to mask
                k, v, causal = torch.cat([cache[0], k], dim=2), torch.cat([cache[1], v], dim=2), False
            cache[:] = [k, v]
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
        cache: list[torch.Tensor] | None = None,
    ) -> torch.Tensor:
        x = x + self.dropout(self.attention(self.norm_attention(x), mask=mask, causal=causal, cache=cache))
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
        word_dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.embedding = embedding or nn.Embedding(vocab_size, dim)
        self.word_dropout = WordDropout(word_dropout)
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
        caches: list[list[torch.Tensor]] | None = None,
        offset: int = 0,
    ) -> torch.Tensor:
        """`caches`: one key/value cache per block (see `Attention`), for decoding a position at a time;
        `offset`: the position of the first token."""
        x = self.word_dropout(self.embedding(tokens) * self.scale)  # (B, T, dim)
        x = self.dropout(self.positions(x, offset))
        for i, block in enumerate(self.blocks):
            cache = None if caches is None else caches[i]
            x = block(x, mask=mask, causal=causal, memory=memory, memory_mask=memory_mask, cache=cache)
        return self.norm(x)


class TransformerClassifier(ClassifierCore):
    """Encoder over (B, T) token ids padded with pad_id -> class logits (B, num_classes); padding is never
    attended to.

    Args:
        vocab_size: vocabulary size; from the datamodule.
        num_classes: number of classes; from the datamodule.
        pad_id: padding id; from the datamodule.
        dim: model width.
        num_layers: encoder blocks.
        num_heads: attention heads (must divide dim).
        mlp_ratio: width of each block's MLP, in multiples of dim.
        dropout: dropout probability.
        max_length: longest input, in tokens.
        positional: "sinusoidal" (Vaswani et al.) or "learned".
        pooling: "mean" or "max" over the real (non-padding) positions, or "first" (position 0, a <bos>/[CLS]
            token).
        word_dropout: probability of hiding a whole token (its embedding zeroed) in training.
        ngram_buckets: with > 0, a linear model over the text's unigrams and its bigrams hashed into this
            many buckets adds to the logits (`cores.ngrams.NgramLogits`).
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
        pooling: PoolingKind = "mean",
        word_dropout: float = 0.0,
        ngram_buckets: int = 0,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        check_range("dropout", dropout, 0.0, 0.999)
        check_range("ngram_buckets", ngram_buckets, 0)
        self.pad_id = pad_id
        check_range("word_dropout", word_dropout, 0.0, 0.999)
        self.pooling = pooling
        args = (vocab_size, dim, num_layers, num_heads, mlp_ratio, dropout, max_length, positional)
        self.encoder = TransformerStack(*args, word_dropout=word_dropout)
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(dim, num_classes))
        self.ngrams = NgramLogits(vocab_size, num_classes, ngram_buckets, pad_id) if ngram_buckets else None

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        real = tokens != self.pad_id  # (B, T)
        hidden = self.encoder(tokens, mask=real[:, None, None, :])  # (B, T, dim)
        logits = self.head(pool(hidden, real, self.pooling))
        return logits if self.ngrams is None else logits + self.ngrams(tokens)


class TransformerLanguageModel(LanguageModelCore):
    """Decoder-only language model: (B, T) ids -> next-token logits (B, T, vocab_size), causal self-attention,
    tied input/output embeddings (Press & Wolf, 2017).

    Args:
        vocab_size: vocabulary size; from the datamodule.
        dim: model width.
        num_layers: decoder blocks.
        num_heads: attention heads (must divide dim).
        mlp_ratio: width of each block's MLP, in multiples of dim.
        dropout: dropout probability.
        max_length: longest context, in tokens.
        positional: "sinusoidal" (Vaswani et al.) or "learned".
    """

    def __init__(
        self,
        vocab_size: int = 256,
        dim: int = 256,
        num_layers: int = 4,
        num_heads: int = 4,
        mlp_ratio: int = 4,
        dropout: float = 0.1,
        max_length: int = 256,
        positional: PositionalKind = "sinusoidal",
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        check_range("dropout", dropout, 0.0, 0.999)
        self.max_length = max_length
        self.decoder = TransformerStack(
            vocab_size, dim, num_layers, num_heads, mlp_ratio, dropout, max_length, positional
        )
        self.head = nn.Linear(dim, vocab_size, bias=False)
        self.head.weight = self.decoder.embedding.weight

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.head(self.decoder(tokens, causal=True))

    @torch.no_grad()
    def generate(
        self, prompt: torch.Tensor, max_new_tokens: int, temperature: float = 1.0, top_k: int | None = None
    ) -> torch.Tensor:
        """(B, T) prompt ids -> (B, T + max_new_tokens), with every layer's keys and values cached: a new token
        costs the work of one position, not of the whole context (3x faster for 200 characters with the
        preset). Positions are absolute, so when the cache holds `max_length` positions, it is refilled from
        the last `max_length // 2` tokens: the context then grows back from half the window to all of it."""
        tokens, window = prompt, int(self.hparams["max_length"])
        caches: list[list[torch.Tensor]] = []
        filled = 0  # positions in the caches
        for _ in range(max_new_tokens):
            if not caches or filled == window:
                context = tokens[:, -(window if not caches else window // 2) :]
                caches = [[] for _ in self.decoder.blocks]
                hidden = self.decoder(context, causal=True, caches=caches)
                filled = context.shape[1]
            else:
                hidden = self.decoder(tokens[:, -1:], caches=caches, offset=filled)
                filled += 1
            next_token = sample_next(self.head(hidden[:, -1]), temperature, top_k)
            tokens = torch.cat([tokens, next_token[:, None]], dim=1)
        return tokens


class TransformerSeq2Seq(Seq2SeqCore):
    """Encoder-decoder over one shared vocabulary (Vaswani et al.): the decoder attends to its own past
    (causal) and to the encoded source (cross-attention); embeddings shared by both and the output layer.

    Args:
        vocab_size: vocabulary size (shared by source and target); from the datamodule.
        pad_id: padding id; from the datamodule.
        dim: model width.
        num_layers: encoder blocks and decoder blocks.
        num_heads: attention heads (must divide dim).
        mlp_ratio: width of each block's MLP, in multiples of dim.
        dropout: dropout probability.
        max_length: longest source or target, in tokens.
        positional: "sinusoidal" (Vaswani et al.) or "learned".
    """

    def __init__(
        self,
        vocab_size: int = 16,
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
        self.save_hyperparameters()
        check_range("dropout", dropout, 0.0, 0.999)
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

    def decode(self, target_in: torch.Tensor, memory: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        source_states, source_mask = memory
        mask = key_padding_mask(target_in, self.pad_id)
        hidden = self.decoder(target_in, mask=mask, causal=True, memory=source_states, memory_mask=source_mask)
        return self.head(hidden)  # (B, T, vocab)
