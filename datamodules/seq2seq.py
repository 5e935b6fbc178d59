"""Sequence-to-sequence pairs: algorithmic tasks generated from a seed, a FreeDict dictionary's phrases, or
the user's TSV of pairs, held in memory or, when too big for it, streamed from prepared shards
(`python -m experiments.prepare FILE DIR --kind pairs`, datamodules/pair_shards.py)."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import torch

from datamodules.freedict import freedict_pairs
from datamodules.pair_shards import KIND, SHARD_SETTINGS, ShardPairs, check_counts, kept, pair_split, prepare_pairs
from datamodules.prepared import Manifest
from datamodules.sample_shards import ShardSamples
from datamodules.sequence_base import SequenceDataModule, pad
from datamodules.sequence_streaming import Loading, StreamsPreparedSequences
from datamodules.special_tokens import BOS_ID, EOS_ID
from datamodules.text_sources import read_table
from datamodules.tokenization import TokenizerKind, encode_all, tokenizer_from_json, train_tokenizer
from validation import ConfigError, check_range

TASKS = ("reverse", "sort", "addition")
FREEDICT = "freedict:"
# Peak memory of the in-memory path per byte of a file of pairs (an estimate, not measured: each row's dict and
# strings, then two tensors of int64 ids per pair, several hundred bytes for a pair of short phrases).
IN_MEMORY_OVERHEAD = 20


def pad_pairs(samples: list[tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
    """The streamed loader's collate: [(source (S,), target (T,))] -> (sources (B, S), targets (B, T)), padded
    with 0 as in memory."""
    sources, targets = zip(*samples, strict=True)
    return pad(list(sources)), pad(list(targets))


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


class Seq2SeqDataModule(StreamsPreparedSequences, SequenceDataModule):
    """Pairs -> batches (source (B, S), target (B, T)); targets are <bos> ... <eos>, both padded with 0.

    Args:
        source: "reverse", "sort" or "addition" (generated); "freedict:<pair>", the phrases of a FreeDict
            dictionary (`freedict:deu-eng`: 49,978 German phrases and sentences with their English, see
            `datamodules/freedict.py`); a .tsv file with `source` and `target` columns, split by a seeded hash of
            each row's number (`pair_shards.pair_split`); or a folder prepared from one by
            `python -m experiments.prepare FILE DIR --kind pairs` (streamed; its split and tokenizer are the
            folder's, and `tokenizer`, `vocab_size` and `max_chars` must be those it was prepared with).
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
        loading: how a file's pairs reach training: "memory", "streaming" (from prepared shards, read in
            DataLoader workers, each rank its own part; a file is prepared on first use into the cache) or
            "auto" (a prepared folder streams; a file streams when the in-memory path would need more than half
            of the memory available to each process). Generated and dictionary pairs are held in memory.
        workers: DataLoader worker processes per training process when streaming (default: the CPUs of the
            process shared among the processes of the machine, at most 8).
    """

    model_facts = ("vocab_size", "pad_id", "bos_id", "eos_id")
    input_kind = "texts"  # sources
    prepared_kind = KIND
    in_memory_overhead = IN_MEMORY_OVERHEAD
    shard_settings = SHARD_SETTINGS
    raw_source = "a TSV of pairs"

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
        loading: Loading = "auto",
        workers: int | None = None,
    ) -> None:
        super().__init__(batch_size, seed, bucket)
        check_range("num_examples", num_examples, 10)
        check_range("min_length", min_length, 1)
        check_range("max_length", max_length, min_length)
        if max_chars is not None:
            check_range("max_chars", max_chars, 1)
        if workers is not None:
            check_range("workers", workers, 0)
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
        return [pair for pair in pairs if kept(*pair, hp["max_chars"])]

    def split(self) -> dict[str, list[tuple[str, str]]]:
        """The pairs of each split: generated and dictionary pairs shuffled and cut by the fractions; a file's
        by a seeded hash of each row's number (as `pair_shards` splits it: the same pairs in memory or prepared)."""
        hp = self.hparams
        if self.built_in():
            pairs = self.read()
            random.Random(hp["seed"]).shuffle(pairs)
            n_test, n_val = int(len(pairs) * hp["test_fraction"]), int(len(pairs) * hp["val_fraction"])
            parts = {"test": pairs[:n_test], "val": pairs[n_test : n_test + n_val], "train": pairs[n_test + n_val :]}
            if not all(parts.values()):
                raise ConfigError(f"{hp['source']} has too few pairs ({len(pairs)}) for train, val and test splits")
            return parts
        rows = read_table(Path(hp["source"]), ["source", "target"]).rows
        parts = {name: [] for name in ("train", "val", "test")}
        for number, row in enumerate(rows):
            if kept(row["source"], row["target"], hp["max_chars"]):
                parts[pair_split(number, hp)].append((row["source"], row["target"]))
        check_counts(hp["source"], {name: len(part) for name, part in parts.items()})
        return parts

    def build(self) -> None:
        hp = self.hparams
        if self.shards is not None:
            self.open_prepared(self.shards)
            return
        parts = self.split()
        kind: TokenizerKind = "char" if hp["source"] in TASKS else hp["tokenizer"]
        self.tokenizer = train_tokenizer(kind, [text for pair in parts["train"] for text in pair], hp["vocab_size"])
        for name, part in parts.items():
            sources = self.encode_sources([source for source, _ in part])
            target_ids = encode_all(self.tokenizer, [target for _, target in part])
            targets = [torch.tensor([BOS_ID, *ids, EOS_ID], dtype=torch.long) for ids in target_ids]
            self.splits[name] = (sources, targets)
            self.lengths[name] = torch.tensor([len(s) for s in sources])

    def encode_sources(self, texts: list[str]) -> list[torch.Tensor]:
        """Source texts -> their ids (S,) each, ending with <eos> too: the decoder can find where a source ends
        by attention (reversal starts there) instead of counting padding."""
        assert self.tokenizer is not None  # trained by `build`, or restored from a checkpoint
        return [torch.tensor([*ids, EOS_ID], dtype=torch.long) for ids in encode_all(self.tokenizer, texts)]

    def encode_inputs(self, items: list[str]) -> torch.Tensor:
        return pad(self.encode_sources(items))  # (B, S)

    def texts(self, split: str) -> tuple[list[str], list[str]]:
        """The split's sources and targets as text again (decoded: lossless for "char" and "bpe")."""
        self.ready()
        pairs = self.splits[split]
        if isinstance(pairs, ShardSamples):  # prepared: read through, in stored order
            pairs = tuple(zip(*(pairs[(index, 0)] for index in range(len(pairs))), strict=True))
        sources, targets = pairs
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

    # Streaming from prepared shards (`StreamsPreparedSequences`).
    def built_in(self) -> str | None:
        source = self.hparams["source"]
        return "in memory (built-in)" if source in TASKS or source.startswith(FREEDICT) else None

    def checked_settings(self, settings: dict[str, Any]) -> tuple[str, ...]:
        vocabulary = () if settings.get("tokenizer") == "char" else ("vocab_size",)  # a char tokenizer has no limit
        return ("tokenizer", *vocabulary, "max_chars")

    def prepare_shards(self, source: Path, output: Path, **settings: Any) -> Manifest:
        return prepare_pairs(source, output, **settings)

    def open_state(self, manifest: Manifest) -> None:
        self.tokenizer = tokenizer_from_json(manifest.state["tokenizer"])

    def shard_split(self, split: str, folder: Path, digests: dict[str, str]) -> ShardPairs:
        return ShardPairs(folder, digests)

    def collate(self) -> Any:
        return pad_pairs
