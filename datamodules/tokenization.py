"""Tokenizers trained on the training split only and saved with the run.

Every kind shares the ids of the special tokens: <pad>=0, <unk>=1, <bos>=2, <eos>=3.
- "char": one id per character; our own, because it encodes 5 M characters in well under a second.
- "word": Hugging Face `tokenizers` WordLevel over lower-cased words and punctuation.
- "bpe": Hugging Face `tokenizers` byte-level BPE (lossless: decode(encode(text)) == text).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np

TokenizerKind = Literal["char", "word", "bpe"]
SPECIALS = ("<pad>", "<unk>", "<bos>", "<eos>")
PAD_ID, UNK_ID, BOS_ID, EOS_ID = range(4)


class Tokenizer(Protocol):
    vocab_size: int

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: Sequence[int]) -> str: ...

    def save(self, path: Path) -> None: ...


class CharTokenizer:
    """Characters seen in training get ids 4, 5, ... in sorted order; any other character is <unk>."""

    def __init__(self, chars: Sequence[str]) -> None:
        self.chars = list(chars)
        self.vocab_size = len(SPECIALS) + len(self.chars)
        self.codes = np.array([ord(c) for c in self.chars], dtype=np.uint32)  # sorted code points

    @classmethod
    def train(cls, texts: Iterable[str]) -> CharTokenizer:
        return cls(sorted(set().union(*map(set, texts))))

    def encode_array(self, text: str) -> np.ndarray:
        codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
        positions = np.searchsorted(self.codes, codes).clip(max=max(len(self.codes) - 1, 0))
        known = self.codes[positions] == codes if len(self.codes) else np.zeros(len(codes), bool)
        return np.where(known, positions + len(SPECIALS), UNK_ID).astype(np.int64)

    def encode(self, text: str) -> list[int]:
        return self.encode_array(text).tolist()

    def decode(self, ids: Sequence[int]) -> str:
        offset = len(SPECIALS)
        return "".join(self.chars[i - offset] for i in ids if i >= offset)

    def save(self, path: Path) -> None:
        path.write_text(json.dumps({"firstlight_char_tokenizer": self.chars}))


class SubwordTokenizer:
    """A Hugging Face `tokenizers.Tokenizer` behind the same small interface."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        self.vocab_size = tokenizer.get_vocab_size()

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text).ids

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return [encoding.ids for encoding in self.tokenizer.encode_batch(texts)]

    def decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(ids))

    def save(self, path: Path) -> None:
        self.tokenizer.save(str(path))


def train_tokenizer(kind: TokenizerKind, texts: list[str], vocab_size: int = 8000) -> CharTokenizer | SubwordTokenizer:
    """Fit a tokenizer of the given kind on `texts` (the training split)."""
    if kind == "char":
        return CharTokenizer.train(texts)
    from tokenizers import Tokenizer as HFTokenizer
    from tokenizers import decoders, models, normalizers, pre_tokenizers, trainers

    if kind == "word":
        tokenizer = HFTokenizer(models.WordLevel(unk_token="<unk>"))
        tokenizer.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
        tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
        trainer: Any = trainers.WordLevelTrainer(vocab_size=vocab_size, special_tokens=list(SPECIALS), min_frequency=2)
    else:
        tokenizer = HFTokenizer(models.BPE(unk_token="<unk>"))
        tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tokenizer.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            special_tokens=list(SPECIALS),
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        )
    tokenizer.train_from_iterator(texts, trainer)
    return SubwordTokenizer(tokenizer)


def load_tokenizer(path: Path) -> CharTokenizer | SubwordTokenizer:
    data = json.loads(path.read_text())
    if "firstlight_char_tokenizer" in data:
        return CharTokenizer(data["firstlight_char_tokenizer"])
    from tokenizers import Tokenizer as HFTokenizer

    return SubwordTokenizer(HFTokenizer.from_file(str(path)))
