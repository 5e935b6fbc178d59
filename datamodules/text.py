"""Text classification: Rotten Tomatoes review snippets by default, or the user's CSV/TSV/JSONL."""

from __future__ import annotations

import zlib
from pathlib import Path
from typing import Any

import torch

from datamodules.sequence_base import SequenceDataModule, pad
from datamodules.text_sources import read_table, rotten_tomatoes
from datamodules.tokenization import (
    TokenizerKind,
    classifier_input,
    load_pretrained_tokenizer,
    special_ids,
    train_tokenizer,
)
from validation import ConfigError, check_range


def group_split(groups: list[str], val_fraction: float, test_fraction: float, seed: int) -> list[str]:
    """Assign every group (e.g. a movie) wholly to train, val or test, by a seeded hash of its name,
    so no group's examples leak across splits."""
    assignments = []
    for group in groups:
        u = (zlib.crc32(f"{seed}:{group}".encode()) & 0xFFFFFFFF) / 2**32  # uniform in [0, 1)
        assignments.append("test" if u < test_fraction else "val" if u < test_fraction + val_fraction else "train")
    return assignments


class TextClassificationDataModule(SequenceDataModule):
    """Texts with labels -> batches (tokens (B, T) starting with <bos> and padded with `pad_id`, labels (B,)).

    Args:
        source: "rotten_tomatoes" (fresh vs rotten review snippets, split by movie so no movie is in two
            splits), or a .csv/.tsv/.jsonl file of your own.
        text_column: the column holding the text, in your file.
        label_column: the column holding the label, in your file.
        group_column: optional column whose values are kept within one split (e.g. an author).
        tokenizer: "word", "bpe" or "char", trained on the training split only.
        vocab_size: the largest vocabulary for "word" and "bpe".
        pretrained_tokenizer: a pretrained model's own tokenizer instead of one trained here: a directory saved
            with `save_pretrained` (the model's) or a tokenizer.json. Texts are then framed as that model was
            trained (BERT: [CLS] text [SEP]) and padded with its padding id; `tokenizer` and `vocab_size`
            are unused.
        max_length: texts are cut to this many tokens (with <bos>).
        batch_size: training batch size; evaluation batches are twice as large.
        bucket: batch texts of similar length together, so little compute goes to padding.
        val_fraction: share of the examples (or groups) held out for validation.
        test_fraction: share held out for testing.
        seed: seed of the split and of the shuffling order.
    """

    model_facts = ("vocab_size", "pad_id", "num_classes")
    input_kind = "texts"

    def __init__(
        self,
        source: str = "rotten_tomatoes",
        text_column: str = "text",
        label_column: str = "label",
        group_column: str | None = None,
        tokenizer: TokenizerKind = "word",
        vocab_size: int = 20000,
        pretrained_tokenizer: str | None = None,
        max_length: int = 128,
        batch_size: int = 64,
        bucket: bool = True,
        val_fraction: float = 0.1,
        test_fraction: float = 0.1,
        seed: int = 0,
    ) -> None:
        super().__init__(batch_size, seed, bucket)
        check_range("max_length", max_length, 2)
        check_range("vocab_size", vocab_size, 8)
        check_range("val_fraction", val_fraction, 0.0, 0.5, low_open=True)
        check_range("test_fraction", test_fraction, 0.0, 0.5, low_open=True)
        self.save_hyperparameters(logger=False)
        self.classes: list[str] = []
        self.texts: dict[str, list[str]] = {}  # split -> its texts as read, for references on the same split

    def read(self) -> tuple[list[str], list[str], list[str]]:
        """(texts, labels, groups) of the whole source."""
        hp = self.hparams
        if hp["source"] == "rotten_tomatoes":
            rows = rotten_tomatoes()
            return [r["text"] for r in rows], [r["label"] for r in rows], [r["movie"] for r in rows]
        columns = [hp["text_column"], hp["label_column"]] + ([hp["group_column"]] if hp["group_column"] else [])
        rows = read_table(Path(hp["source"]), columns).rows
        # Labels and groups are names: "pos" and "pos " (a space left by a spreadsheet) are one class.
        texts, labels = [r[hp["text_column"]] for r in rows], [r[hp["label_column"]].strip() for r in rows]
        groups = (
            [r[hp["group_column"]].strip() for r in rows] if hp["group_column"] else list(map(str, range(len(rows))))
        )
        return texts, labels, groups

    def build(self) -> None:
        hp = self.hparams
        texts, labels, groups = self.read()
        assignment = group_split(groups, hp["val_fraction"], hp["test_fraction"], hp["seed"])
        by_split = {name: [i for i, a in enumerate(assignment) if a == name] for name in ("train", "val", "test")}
        for name, members in by_split.items():
            if not members:
                raise ConfigError(f"the {name} split of {hp['source']} is empty; use more data or larger fractions")
        self.classes = sorted({labels[i] for i in by_split["train"]})
        if len(self.classes) < 2:
            raise ConfigError(f"the training texts of {hp['source']} have {len(self.classes)} label(s); need 2 or more")
        unknown = sorted({labels[i] for i in by_split["val"] + by_split["test"]} - set(self.classes))
        if unknown:
            raise ConfigError(f"labels {', '.join(unknown)} occur only outside the training split; merge or drop them")
        if hp["pretrained_tokenizer"]:
            self.tokenizer = load_pretrained_tokenizer(hp["pretrained_tokenizer"])
        else:
            self.tokenizer = train_tokenizer(hp["tokenizer"], [texts[i] for i in by_split["train"]], hp["vocab_size"])
        label_ids = {label: index for index, label in enumerate(self.classes)}
        for name, members in by_split.items():
            tokens = [self.encode_text(texts[i]) for i in members]
            self.splits[name] = (tokens, torch.tensor([label_ids[labels[i]] for i in members]))
            self.texts[name] = [texts[i] for i in members]
            self.lengths[name] = torch.tensor([len(t) for t in tokens])

    def encode_text(self, text: str) -> torch.Tensor:
        """A text -> its token ids (T,): <bos>, then the text's, cut to max_length in all (a pretrained
        tokenizer's: [CLS] text [SEP], or whatever its model was trained with)."""
        assert self.tokenizer is not None  # trained by `build`, or restored from a checkpoint
        return torch.tensor(classifier_input(self.tokenizer, text, self.hparams["max_length"]), dtype=torch.long)

    def encode_inputs(self, items: list[str]) -> torch.Tensor:
        return pad([self.encode_text(text) for text in items], self.pad_id)  # (B, T)

    def inference_state(self) -> dict[str, Any]:
        return {**super().inference_state(), "classes": self.classes}

    def load_inference_state(self, state: dict[str, Any]) -> None:
        super().load_inference_state(state)
        self.classes = list(state["classes"])

    def fetch(self, split: str, indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        tokens, labels = self.splits[split]
        return pad([tokens[i] for i in indices.tolist()], self.pad_id), labels[indices]

    @property
    def pad_id(self) -> int:
        """<pad> (0) for firstlight's tokenizers; a pretrained tokenizer's own padding id."""
        tokenizer = self.ready().tokenizer
        assert tokenizer is not None  # trained by `build`, or restored from a checkpoint
        return special_ids(tokenizer).pad

    @property
    def num_classes(self) -> int:
        self.ready()
        return len(self.classes)
