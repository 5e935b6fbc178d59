"""Text classification: Rotten Tomatoes review snippets by default, or the user's CSV/TSV/JSONL, held in memory
or, when too big for it, streamed from prepared shards (`python -m experiments.prepare FILE DIR --kind texts`,
datamodules/text_shards.py)."""

from __future__ import annotations

import fcntl
import hashlib
import json
import sys
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from datamodules.batches import batches_done
from datamodules.cache import cache_dir
from datamodules.image_shards import IN_PROGRESS, chunk_sizes
from datamodules.prepared import MANIFEST, fingerprint, is_prepared, read_manifest, sha256
from datamodules.sequence_base import SequenceDataModule, pad
from datamodules.streaming import (
    ChunkedOrder,
    StreamingBatches,
    StreamsWhenPrepared,
    available_memory,
    default_workers,
    processes_per_machine,
)
from datamodules.text_shards import (
    KIND,
    SHARD_SETTINGS,
    BucketedOrder,
    ShardTexts,
    check_splits,
    group_split,
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

Loading = Literal["auto", "memory", "streaming"]
# Peak memory of the in-memory path per byte of the file: each text as a Python string, its row's dict and
# cells, the token tensors (measured: 277 MB of peak for a 20.5 MB CSV of 200,000 rows of about 100
# characters, 13.5x; longer texts cost less per byte).
IN_MEMORY_OVERHEAD = 14
MEMORY_SHARE = 0.5  # a file streams when the in-memory path would need more than this share of memory
SPLITS = ("train", "val", "test")


class PadBatch:
    """The DataLoader's collate: [(ids (T,), label)] -> (ids (B, longest) padded with `pad_id`, labels (B,))."""

    def __init__(self, pad_id: int) -> None:
        self.pad_id = pad_id

    def __call__(self, samples: list[tuple[torch.Tensor, int]]) -> tuple[torch.Tensor, torch.Tensor]:
        tokens, labels = zip(*samples, strict=True)
        return pad(list(tokens), self.pad_id), torch.tensor(labels)


class TextClassificationDataModule(StreamsWhenPrepared, SequenceDataModule):
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
            with `save_pretrained` (the model's) or a tokenizer.json. Texts are then framed as that model was
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
        if loading == "streaming" and source == "rotten_tomatoes":
            raise ConfigError("rotten_tomatoes is held in memory; --data.loading streaming takes a file of yours")
        self.save_hyperparameters(logger=False)
        self.classes: list[str] = []
        self.texts: dict[str, list[str]] = {}  # split -> its texts as read, for references on the same split
        self.loading_reason = ""

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

    # Streaming from prepared shards.
    @cached_property
    def shards(self) -> Path | None:
        """The prepared folder to stream from, or None to hold the texts in memory (see `loading`); a file
        chosen for streaming is prepared into the cache here, once."""
        hp = self.hparams
        loading, source = hp["loading"], hp["source"]
        if source == "rotten_tomatoes":
            self.loading_reason = "in memory (built-in)"
            return None
        path = Path(source)
        if path.is_dir():
            if not is_prepared(path) and not (path / IN_PROGRESS).is_file():  # else: read_manifest says why
                raise ConfigError(
                    f"{path} is a folder without {MANIFEST}: give a CSV, TSV or JSON Lines file, or a folder "
                    "prepared from one with python -m experiments.prepare FILE DIR --kind texts"
                )
            if loading == "memory":
                raise ConfigError(f"{path} is a prepared dataset, which streams; leave out --data.loading")
            if hp["pretrained_tokenizer"]:
                raise ConfigError(
                    f"{path} was prepared with a tokenizer of its own; leave out --data.pretrained_tokenizer, or give "
                    "the file itself with --data.loading memory"
                )
            self.loading_reason = "streaming: a prepared folder"
            return path
        if loading == "memory" or not path.is_file():  # a missing file: the in-memory reader says so
            self.loading_reason = "in memory"
            return None
        needed, per_process = IN_MEMORY_OVERHEAD * path.stat().st_size, available_memory() // processes_per_machine()
        size = f"about {needed / 2**30:.1f} GB of {per_process / 2**30:.1f} GB available"
        if loading == "auto" and hp["pretrained_tokenizer"]:
            self.loading_reason = f"in memory: texts are streamed with firstlight's tokenizers only ({size})"
            return None
        if loading == "auto" and needed <= MEMORY_SHARE * per_process:
            self.loading_reason = f"in memory: {size}"
            return None
        if hp["pretrained_tokenizer"]:
            raise ConfigError(
                "texts are streamed with firstlight's tokenizers only; leave out --data.pretrained_tokenizer, or use "
                "--data.loading memory"
            )
        why = (
            "--data.loading streaming"
            if loading == "streaming"
            else (
                f"in memory it would take about {needed / 2**30:.1f} GB, more than half of the "
                f"{per_process / 2**30:.1f} GB available to each process"
            )
        )
        self.loading_reason = f"streaming: {why}"
        return self.prepared_in_cache(path)

    def prepare_settings(self) -> dict[str, Any]:
        """The arguments of `prepare_texts` that shape the shards, as this datamodule's."""
        return {name: self.hparams[name] for name in SHARD_SETTINGS}

    def prepared_in_cache(self, path: Path) -> Path:
        """The cache's prepared copy of the file `path` for these settings, made on first use (one process
        prepares while the others of the machine wait for it)."""
        settings = self.prepare_settings()
        key = json.dumps([str(path.resolve()), fingerprint(path), settings], sort_keys=True)
        target = cache_dir() / "prepared" / f"{path.stem}-{hashlib.sha256(key.encode()).hexdigest()[:12]}"
        target.parent.mkdir(parents=True, exist_ok=True)
        with open(target.with_suffix(".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not is_prepared(target):
                print(f"preparing {path} as shards in {target} (once)", file=sys.stderr, flush=True)
                prepare_texts(path, target, **settings, workers=default_workers(None))
        return target

    def open_prepared(self, folder: Path) -> None:
        """Take the tokenizer, classes and splits of a prepared folder, refusing a tokenizer or length it was
        not prepared with (the run's config would then say what it did not train on)."""
        hp = self.hparams
        manifest = read_manifest(folder, KIND)
        prepared = manifest.settings
        names = ("tokenizer", "max_length") if hp["tokenizer"] == "char" else ("tokenizer", "vocab_size", "max_length")
        differ = [f"--data.{name} {hp[name]}" for name in names if prepared.get(name) != hp[name]]
        if differ:
            shown = ("tokenizer", "max_length") if prepared.get("tokenizer") == "char" else names
            was = ", ".join(f"{name} {prepared.get(name)}" for name in shown)
            raise ConfigError(
                f"{folder} was prepared with {was}, not {', '.join(differ)}: give its settings, or prepare the file "
                "again with yours"
            )
        self.tokenizer = tokenizer_from_json(manifest.state["tokenizer"])
        self.classes = list(manifest.state["classes"])
        for split in SPLITS:
            prefix = f"{split}/"
            digests = {
                name[len(prefix) :]: value for name, value in manifest.digests.items() if name.startswith(prefix)
            }
            lengths = folder / split / "lengths.npy"
            if "lengths.npy" in digests and sha256(lengths) != digests["lengths.npy"]:
                raise ConfigError(f"{lengths} is damaged (not as prepared); restore it, or prepare the dataset again")
            self.splits[split] = ShardTexts(folder / split, digests)
            self.lengths[split] = torch.from_numpy(np.load(lengths))

    def prepared_dataset(self) -> Path | None:
        return self.shards

    def loading_note(self) -> str:
        shards = self.shards
        if shards is None:
            return f"data: {self.loading_reason}"
        return f"data: {self.loading_reason}; from {shards}, {self.workers()} DataLoader worker(s) per process"

    def workers(self) -> int:
        given = self.hparams["workers"]
        return default_workers(self.trainer) if given is None else given

    def streaming_loader(self, split: str, batch_size: int, training: bool) -> StreamingBatches:
        """Batches of the split's shards (tokens (B, T) padded, labels (B,)), fetched by DataLoader workers."""
        self.ready()
        dataset: ShardTexts = self.splits[split]
        trainer = self.trainer
        rank, world_size = (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)
        sizes = chunk_sizes(dataset.folder)
        options: dict[str, Any] = {"shuffle": training, "equal_batches": training, "seed": self.seed}
        options |= {"rank": rank, "world_size": world_size}
        order = (
            BucketedOrder(sizes, batch_size, self.lengths[split], **options)
            if self.bucket
            else ChunkedOrder(sizes, batch_size, **options)
        )
        loader = StreamingBatches(dataset, order, PadBatch(self.pad_id), self.workers())
        if training:
            loader.progress = batches_done(trainer)  # resumable mid-epoch
        return loader
