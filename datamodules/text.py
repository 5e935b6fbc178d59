"""Text classification: Rotten Tomatoes review snippets by default, or the user's CSV/TSV/JSONL, held in memory
or, when too big for it, streamed from prepared shards (`python -m experiments.prepare FILE DIR --kind texts`,
datamodules/text_shards.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from datamodules.prepared import Manifest
from datamodules.sequence_base import SequenceDataModule, pad
from datamodules.sequence_streaming import Loading, PadBatch, StreamsPreparedSequences
from datamodules.splits import SPLITS, check_splits, group_split
from datamodules.text_shards import (
    KIND,
    SHARD_SETTINGS,
    ShardTexts,
    prepare_texts,
)
from datamodules.text_sources import read_table, rotten_tomatoes
from datamodules.tokenization import (
    TokenizerKind,
    classifier_input,
    load_pretrained_tokenizer,
    special_ids,
    tokenizer_from_json,
    train_tokenizer,
)
from validation import ConfigError, check_range

BUILTIN = "rotten_tomatoes"  # the built-in source (`text_sources.rotten_tomatoes`); any other is a file
# Peak memory of the in-memory path per byte of the file: each text as a Python string, its row's dict and
# cells, the token tensors (measured: 277 MB of peak for a 20.5 MB CSV of 200,000 rows of about 100
# characters, 13.5x; longer texts cost less per byte).
IN_MEMORY_OVERHEAD = 14
__all__ = ["PadBatch", "TextClassificationDataModule"]


class TextClassificationDataModule(StreamsPreparedSequences, SequenceDataModule):
    """Texts with labels -> batches (tokens (B, T) starting with <bos> and padded with `pad_id`, labels (B,)).

    Args:
        source: "rotten_tomatoes" (fresh vs rotten review snippets, split by movie so no movie is in two
            splits), a .csv/.tsv/.jsonl file of your own, or a folder prepared from one by
            `python -m experiments.prepare FILE DIR --kind texts` (streamed; its split, tokenizer and classes
            are the folder's, and `tokenizer`, `vocab_size` and `max_length` must be those it was prepared with).
        text_column: the column holding the text, in your file.
        label_column: the column holding the label, in your file.
        group_column: optional column whose values are kept within one split (e.g. an author).
        tokenizer: "word", "bpe" or "char", trained on the training split only.
        vocab_size: the largest vocabulary for "word" and "bpe".
        pretrained_tokenizer: a pretrained model's own tokenizer instead of one trained here: a directory saved
            with `save_pretrained` (the model's), a tokenizer.json, or `package:<name>`, the tokenizer of
            packaged weights (`package:all-minilm-l6-v2`). Texts are then framed as that model was
            trained (BERT: [CLS] text [SEP]) and padded with its padding id; `tokenizer` and `vocab_size`
            are unused. Texts so tokenized are held in memory, never streamed.
        max_length: texts are cut to this many tokens (with <bos>).
        batch_size: training batch size; evaluation batches are twice as large.
        bucket: batch texts of similar length together, so little compute goes to padding.
        val_fraction: share of the examples (or groups) held out for validation.
        test_fraction: share held out for testing.
        seed: seed of the split and of the shuffling order.
        loading: how a file's texts reach training. "memory": read and tokenized once into memory (the fast
            path for small data; rotten_tomatoes always). "streaming": from prepared shards, read in DataLoader
            workers, each rank its own part, memory flat whatever the size; a file is prepared on first use into
            the cache. "auto": a prepared folder streams; a file streams when the in-memory path would need more
            than half of the memory available to each process; the start note says which and why.
        workers: DataLoader worker processes per training process when streaming (default: the CPUs of the
            process shared among the processes of the machine, at most 8).
    """

    model_facts = ("vocab_size", "pad_id", "num_classes")
    input_kind = "texts"
    prepared_kind = KIND
    in_memory_overhead = IN_MEMORY_OVERHEAD
    shard_settings = SHARD_SETTINGS
    raw_source = "a CSV, TSV or JSON Lines file"

    def __init__(
        self,
        source: str = BUILTIN,
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
        loading: Loading = "auto",
        workers: int | None = None,
    ) -> None:
        super().__init__(batch_size, seed, bucket)
        check_range("max_length", max_length, 2)
        check_range("vocab_size", vocab_size, 8)
        check_range("val_fraction", val_fraction, 0.0, 0.5, low_open=True)
        check_range("test_fraction", test_fraction, 0.0, 0.5, low_open=True)
        if workers is not None:
            check_range("workers", workers, 0)
        if loading == "streaming" and source == BUILTIN:
            raise ConfigError(f"{BUILTIN} is held in memory; --data.loading streaming takes a file of yours")
        self.save_hyperparameters(logger=False)
        self.classes: list[str] = []
        self.texts: dict[str, list[str]] = {}  # split -> its texts as read, for references on the same split

    def read(self) -> tuple[list[str], list[str], list[str]]:
        """(texts, labels, groups) of the whole source."""
        hp = self.hparams
        if hp["source"] == BUILTIN:
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
        if self.shards is not None:
            self.open_prepared(self.shards)
            return
        texts, labels, groups = self.read()
        assignment = group_split(groups, hp["val_fraction"], hp["test_fraction"], hp["seed"])
        by_split = {name: [i for i, a in enumerate(assignment) if a == name] for name in SPLITS}
        self.classes = check_splits(
            hp["source"],
            {name: len(members) for name, members in by_split.items()},
            {name: {labels[i] for i in members} for name, members in by_split.items()},
        )
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

    # Streaming from prepared shards (`StreamsPreparedSequences`).
    def built_in(self) -> str | None:
        return "in memory (built-in)" if self.hparams["source"] == BUILTIN else None

    def memory_only(self) -> tuple[str, str] | None:
        if self.hparams["pretrained_tokenizer"]:
            return "texts are streamed with firstlight's tokenizers only", "leave out --data.pretrained_tokenizer"
        return None

    def refuse_prepared(self, folder: Path) -> None:
        if self.hparams["pretrained_tokenizer"]:
            raise ConfigError(
                f"{folder} was prepared with a tokenizer of its own; leave out --data.pretrained_tokenizer, or give "
                "the file itself with --data.loading memory"
            )

    def checked_settings(self, settings: dict[str, Any]) -> tuple[str, ...]:
        return (
            ("tokenizer", "max_length")
            if settings.get("tokenizer") == "char"
            else ("tokenizer", "vocab_size", "max_length")
        )

    def prepare_shards(self, source: Path, output: Path, **settings: Any) -> Manifest:
        return prepare_texts(source, output, **settings)

    def open_state(self, manifest: Manifest) -> None:
        self.tokenizer = tokenizer_from_json(manifest.state["tokenizer"])
        self.classes = list(manifest.state["classes"])

    def shard_split(self, split: str, folder: Path, digests: dict[str, str]) -> ShardTexts:
        return ShardTexts(folder, digests)

    def collate(self) -> PadBatch:
        return PadBatch(self.pad_id)
