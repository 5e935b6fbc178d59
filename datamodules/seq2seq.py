"""Sequence-to-sequence pairs: algorithmic tasks generated from a seed, a FreeDict dictionary's phrases, or
the user's TSV of pairs."""

from __future__ import annotations

import random
from pathlib import Path

import torch

from datamodules.freedict import freedict_pairs
from datamodules.sequence_base import SequenceDataModule, pad
from datamodules.text_sources import read_table
from datamodules.tokenization import BOS_ID, EOS_ID, TokenizerKind, train_tokenizer
from validation import ConfigError, check_range

TASKS = ("reverse", "sort", "addition")
FREEDICT = "freedict:"


def generate_pairs(task: str, count: int, min_length: int, max_length: int, seed: int) -> list[tuple[str, str]]:
    """`count` distinct (source, target) pairs of digit strings, the same for the same seed.

    reverse: 3141 -> 1413;  sort: 3141 -> 1134;  addition: 12+345 -> 357 (operands of up to max_length digits).
    """
    rng = random.Random(seed)
    pairs: dict[str, str] = {}
    attempts = 0
    while len(pairs) < count and attempts < 20 * count:
        attempts += 1
        if task == "addition":
            a, b = (rng.randrange(10 ** rng.randint(min_length, max_length)) for _ in range(2))
            pairs[f"{a}+{b}"] = str(a + b)
        else:
            digits = "".join(rng.choice("0123456789") for _ in range(rng.randint(min_length, max_length)))
            pairs[digits] = digits[::-1] if task == "reverse" else "".join(sorted(digits))
    return list(pairs.items())


class Seq2SeqDataModule(SequenceDataModule):
    """Pairs -> batches (source (B, S), target (B, T)); targets are <bos> ... <eos>, both padded with 0.

    Args:
        source: "reverse", "sort" or "addition" (generated); "freedict:<pair>", the phrases of a FreeDict
            dictionary (`freedict:deu-eng`: 49,978 German phrases and sentences with their English, see
            `datamodules/freedict.py`); or a .tsv file with `source` and `target` columns.
        num_examples: pairs to generate, split into train/val/test (generated tasks).
        min_length: shortest generated sequence (digits per operand for addition).
        max_length: longest generated sequence.
        max_chars: keep only the pairs whose source and target are at most this many characters long
            (dictionaries and files; None: all).
        tokenizer: tokenizer for a TSV ("char", "word" or "bpe"); generated tasks use characters.
        vocab_size: vocabulary size for "word" and "bpe".
        batch_size: training batch size.
        bucket: batch pairs of similar source length together.
        val_fraction: share of the pairs for validation.
        test_fraction: share of the pairs for testing.
        seed: seed of the generated pairs, the split and the shuffling order.
    """

    model_facts = ("vocab_size", "pad_id", "bos_id", "eos_id")
    input_kind = "texts"  # sources

    def __init__(
        self,
        source: str = "reverse",
        num_examples: int = 20000,
        min_length: int = 1,
        max_length: int = 12,
        max_chars: int | None = None,
        tokenizer: TokenizerKind = "char",
        vocab_size: int = 8000,
        batch_size: int = 128,
        bucket: bool = True,
        val_fraction: float = 0.1,
        test_fraction: float = 0.1,
        seed: int = 0,
    ) -> None:
        super().__init__(batch_size, seed, bucket)
        check_range("num_examples", num_examples, 10)
        check_range("min_length", min_length, 1)
        check_range("max_length", max_length, min_length)
        if max_chars is not None:
            check_range("max_chars", max_chars, 1)
        self.save_hyperparameters(logger=False)

    def read(self) -> list[tuple[str, str]]:
        hp = self.hparams
        if hp["source"] in TASKS:
            return generate_pairs(hp["source"], hp["num_examples"], hp["min_length"], hp["max_length"], hp["seed"])
        if hp["source"].startswith(FREEDICT):
            pairs = freedict_pairs(hp["source"].removeprefix(FREEDICT))
        else:
            rows = read_table(Path(hp["source"]), ["source", "target"]).rows
            pairs = [(row["source"], row["target"]) for row in rows]
        longest = hp["max_chars"] or float("inf")
        return [(source, target) for source, target in pairs if max(len(source), len(target)) <= longest]

    def build(self) -> None:
        hp = self.hparams
        pairs = self.read()
        random.Random(hp["seed"]).shuffle(pairs)
        n_test, n_val = int(len(pairs) * hp["test_fraction"]), int(len(pairs) * hp["val_fraction"])
        parts = {
            "test": pairs[:n_test],
            "val": pairs[n_test : n_test + n_val],
            "train": pairs[n_test + n_val :],
        }
        if not all(parts.values()):
            raise ConfigError(f"{hp['source']} has too few pairs ({len(pairs)}) for train, val and test splits")
        kind: TokenizerKind = "char" if hp["source"] in TASKS else hp["tokenizer"]
        self.tokenizer = train_tokenizer(kind, [text for pair in parts["train"] for text in pair], hp["vocab_size"])
        for name, part in parts.items():
            sources = [self.encode_source(s) for s, _ in part]
            targets = [torch.tensor([BOS_ID, *self.tokenizer.encode(t), EOS_ID], dtype=torch.long) for _, t in part]
            self.splits[name] = (sources, targets)
            self.lengths[name] = torch.tensor([len(s) for s in sources])

    def encode_source(self, text: str) -> torch.Tensor:
        """A source text -> its ids (S,), ending with <eos> too: the decoder can find where it ends by attention
        (reversal starts there) instead of counting padding."""
        assert self.tokenizer is not None  # trained by `build`, or restored from a checkpoint
        return torch.tensor([*self.tokenizer.encode(text), EOS_ID], dtype=torch.long)

    def encode_inputs(self, items: list[str]) -> torch.Tensor:
        return pad([self.encode_source(text) for text in items])  # (B, S)

    def texts(self, split: str) -> tuple[list[str], list[str]]:
        """The split's sources and targets as text again (decoded: lossless for "char" and "bpe")."""
        self.ready()
        sources, targets = self.splits[split]
        assert self.tokenizer is not None  # made by `build`
        decode = self.tokenizer.decode
        return [decode(source.tolist()) for source in sources], [decode(target.tolist()) for target in targets]

    def fetch(self, split: str, indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        sources, targets = self.splits[split]
        chosen = indices.tolist()
        return pad([sources[i] for i in chosen]), pad([targets[i] for i in chosen])

    @property
    def bos_id(self) -> int:
        return BOS_ID

    @property
    def eos_id(self) -> int:
        return EOS_ID
