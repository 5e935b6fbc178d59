"""A linear model over a text's word uni- and bigrams, to add to a network's class logits."""

from __future__ import annotations

import torch
from torch import nn

from cores.pooling import pool


class NgramLogits(nn.Module):
    """(B, T) token ids padded with `pad_id` -> (B, num_classes): the mean of one learned logit vector per
    unigram and per hashed bigram of the text (fastText, Joulin et al., 2017). Added to a network's logits,
    it hands the classifier the exact word pairs ("not good", "too long") that naive Bayes thrives on on
    small data, which a network trained from scratch learns slowly. Starts at zero: no effect until trained.
    """

    def __init__(self, vocab_size: int, num_classes: int, buckets: int, pad_id: int) -> None:
        super().__init__()
        self.vocab_size, self.buckets, self.pad_id = vocab_size, buckets, pad_id
        self.table = nn.Embedding(vocab_size + buckets, num_classes)  # unigrams, then bigram buckets
        nn.init.zeros_(self.table.weight)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        real = tokens != self.pad_id  # (B, T)
        bigrams = (tokens[:, :-1] * 1_000_003 + tokens[:, 1:]) % self.buckets + self.vocab_size  # (B, T - 1)
        ids = torch.cat([tokens, bigrams], dim=1)
        present = torch.cat([real, real[:, :-1] & real[:, 1:]], dim=1)  # (B, 2T - 1)
        return pool(self.table(ids), present, "mean")  # (B, num_classes)
