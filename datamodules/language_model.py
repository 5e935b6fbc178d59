"""Language modelling: Shakespeare's complete works by default, any UTF-8 text file of the user's, or a corpus
of any size prepared from one (`python -m experiments.prepare FILE DIR --kind corpus`, datamodules/token_corpus.py)."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

import numpy as np
import torch

from datamodules.batches import IndexBatches
from datamodules.prepared import MANIFEST, is_prepared
from datamodules.sequence_base import SequenceDataModule
from datamodules.text_sources import read_text_file, shakespeare
from datamodules.token_corpus import BYTES_PER_CHAR, PARTS, TokenCorpus, available_memory
from datamodules.tokenization import CharTokenizer, TokenizerKind, tokenizer_from_json, train_tokenizer
from validation import ConfigError, check_range

BUILTIN = "shakespeare"  # the built-in source (`text_sources.shakespeare`); any other is a file or a folder


class LanguageModelDataModule(SequenceDataModule):
    """One text cut by position into train | val | test (contiguous, in that order: no leakage), tokenized,
    and cut into windows of `context_length + 1` tokens -> batches (inputs (B, T), targets (B, T)), targets
    being the inputs shifted by one.

    Validation and test windows are fixed consecutive chunks, validation's in a fixed random order, so that
    `--trainer.limit_val_batches N` estimates the loss from a sample of the whole split. Training windows
    start at a random offset within their chunk, drawn anew every epoch (from `seed` and the epoch, so a
    resumed run draws the same): across epochs every character is predicted from every amount of context,
    as with nanoGPT's random windows, while an epoch still covers the text about once.

    A text too big for memory is prepared once into a folder of token id files (`TokenCorpus`), which
    `source` then names: the tokenizer and the split come from the folder, and training windows start
    anywhere (drawn from seed, epoch and batch), with memory flat whatever the corpus's size.

    Args:
        source: "shakespeare" (5.06 M characters), the path of a UTF-8 text file, or a folder prepared from one.
        tokenizer: "char" or "bpe" (byte-level), trained on the training part only.
        vocab_size: vocabulary size for "bpe".
        context_length: tokens the model sees per window.
        batch_size: windows per training batch.
        val_fraction: share of the text, after the training part, for validation.
        test_fraction: share of the text, at the end, for testing.
        seed: seed of the shuffling order.
    """

    model_facts = ("vocab_size", "pad_id", "chars_per_token")
    input_kind = "texts"  # prompts

    def __init__(
        self,
        source: str = BUILTIN,
        tokenizer: TokenizerKind = "char",
        vocab_size: int = 4096,
        context_length: int = 128,
        batch_size: int = 64,
        val_fraction: float = 0.05,
        test_fraction: float = 0.05,
        seed: int = 0,
    ) -> None:
        super().__init__(batch_size, seed, bucket=False)
        check_range("context_length", context_length, 2)
        check_range("val_fraction", val_fraction, 0.0, 0.5, low_open=True)
        check_range("test_fraction", test_fraction, 0.0, 0.5, low_open=True)
        if tokenizer == "word":
            raise ConfigError("language modelling uses tokenizer 'char' or 'bpe' (lossless); 'word' is not supported")
        self.save_hyperparameters(logger=False)
        self.characters = 1.0
        self.tokens = 1.0
        self.offsets, self.offsets_epoch = torch.zeros(0, dtype=torch.long), -1  # training windows' shifts
        self.corpus: TokenCorpus | None = None  # a prepared source

    def build(self) -> None:
        hp = self.hparams
        if hp["source"] != BUILTIN and Path(hp["source"]).is_dir():
            self.open_corpus(Path(hp["source"]))
            return
        if hp["source"] != BUILTIN:
            check_fits_in_memory(
                Path(hp["source"]), hp["tokenizer"], hp["vocab_size"], hp["val_fraction"], hp["test_fraction"]
            )
        text = shakespeare() if hp["source"] == BUILTIN else read_text_file(Path(hp["source"]))
        val_start = int(len(text) * (1 - hp["val_fraction"] - hp["test_fraction"]))
        test_start = int(len(text) * (1 - hp["test_fraction"]))
        parts = {"train": text[:val_start], "val": text[val_start:test_start], "test": text[test_start:]}
        self.tokenizer = train_tokenizer(hp["tokenizer"], [parts["train"]], hp["vocab_size"])
        window = hp["context_length"] + 1
        self.ids: dict[str, torch.Tensor] = {}  # split -> its whole token sequence (N,)
        for name, part in parts.items():
            if isinstance(self.tokenizer, CharTokenizer):
                ids = self.tokenizer.encode_array(part)
            else:
                ids = np.asarray(self.tokenizer.encode(part), dtype=np.int64)
            if name == "train":
                self.characters, self.tokens = len(part), len(ids)
            self.ids[name] = torch.from_numpy(ids)
            # Windows overlap by one token, so every token of the part is a target exactly once; a training
            # window may move by up to a window, so training has one fewer.
            count = (len(ids) - 1) // (window - 1) - (name == "train")
            if count == 0:
                raise ConfigError(
                    f"the {name} part of {hp['source']} has {len(ids)} tokens, fewer than one window of {window}; "
                    "use a longer text or a smaller --data.context_length"
                )
            starts = np.arange(count) * (window - 1)
            windows = torch.from_numpy(ids[starts[:, None] + np.arange(window)])  # (count, window)
            if name == "val":  # a fixed random order: the first batches (--trainer.limit_val_batches) are a
                # sample of the whole split, not the opening of one play
                windows = windows[torch.randperm(count, generator=torch.Generator().manual_seed(hp["seed"]))]
            self.splits[name] = windows

    def open_corpus(self, folder: Path) -> None:
        """Take the split, tokenizer and facts of a prepared corpus, refusing settings it was not prepared with."""
        if not is_prepared(folder) and not (folder / PARTS).is_dir():  # else: an unfinished prepare's, as
            raise ConfigError(  # read_manifest says
                f"{folder} is a folder without {MANIFEST}: give a text file, or a corpus prepared from one with "
                "python -m experiments.prepare"
            )
        hp = self.hparams
        corpus = TokenCorpus(folder)
        prepared = corpus.manifest.settings
        ours = {"tokenizer": hp["tokenizer"], "val_fraction": hp["val_fraction"], "test_fraction": hp["test_fraction"]}
        if hp["tokenizer"] == "bpe":
            ours["vocab_size"] = hp["vocab_size"]
        differ = [f"--data.{name} {value}" for name, value in ours.items() if prepared.get(name) != value]
        if differ:
            names = ("tokenizer", "vocab_size") if prepared.get("tokenizer") == "bpe" else ("tokenizer",)
            was = ", ".join(f"{name} {prepared.get(name)}" for name in (*names, "val_fraction", "test_fraction"))
            raise ConfigError(
                f"{folder} was prepared with {was}, not {', '.join(differ)}: give its settings, or prepare the "
                "text again with yours"
            )
        for split in ("train", "val", "test"):
            corpus.loader(split, hp["context_length"], 1, seed=self.seed, trainer=None)  # a window each, or an error
        state = corpus.manifest.state
        self.tokenizer = tokenizer_from_json(state["tokenizer"])
        self.characters, self.tokens = state["characters"], state["tokens"]
        self.corpus = corpus
        self.splits = {split: corpus.ids(split) for split in ("train", "val", "test")}  # (N,) token ids, mapped

    def fetch(self, split: str, indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        windows = self.splits[split][indices]
        return windows[:, :-1], windows[:, 1:]

    def loader(self, split: str, batch_size: int, shuffle: bool) -> IndexBatches:
        self.ready()
        if self.corpus is not None:
            hp = self.hparams
            return self.corpus.loader(split, hp["context_length"], batch_size, seed=self.seed, trainer=self.trainer)
        loader = super().loader(split, batch_size, shuffle)
        if split == "train":
            order = loader.sampler
            loader.fetch = lambda indices: self.shifted_windows(indices, order.epoch)
        return loader

    def shifted_windows(self, indices: torch.Tensor, epoch: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Training windows `indices` of `epoch`, each moved right by its own offset in [0, context_length)."""
        step = self.hparams["context_length"]
        if self.offsets_epoch != epoch:
            generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self.offsets = torch.randint(step, (len(self.splits["train"]),), generator=generator)
            self.offsets_epoch = epoch
        return windows_at(self.ids["train"], indices * step + self.offsets[indices], step)

    def encode_inputs(self, items: list[str]) -> torch.Tensor:
        """Prompts of one length in tokens (generate them one at a time otherwise) -> (B, T) ids."""
        assert self.tokenizer is not None  # trained by `build`, or restored from a checkpoint
        return torch.tensor([self.tokenizer.encode(prompt) for prompt in items], dtype=torch.long)

    def inference_state(self) -> dict[str, Any]:
        return {**super().inference_state(), "characters": self.characters, "tokens": self.tokens}

    def load_inference_state(self, state: dict[str, Any]) -> None:
        super().load_inference_state(state)
        self.characters, self.tokens = state["characters"], state["tokens"]

    @property
    def chars_per_token(self) -> float:
        """Characters per token in the training text: 1 for "char"; converts nats/token to bits/char."""
        self.ready()
        return self.characters / self.tokens


MEMORY_SHARE = 0.5  # of the memory available, the most a text held in memory may take


def check_fits_in_memory(
    path: Path, tokenizer: str, vocab_size: int, val_fraction: float, test_fraction: float
) -> None:
    """Refuse, before reading it, a text whose windows and ids would not fit in memory; the error gives the
    command that prepares it as a corpus instead."""
    available = available_memory()
    if available is None or not path.is_file():
        return
    need = BYTES_PER_CHAR * path.stat().st_size  # a character is a byte or more
    if need <= MEMORY_SHARE * available:
        return
    folder = path.with_name(f"{path.stem}_corpus")
    options = {"kind": "corpus", "tokenizer": tokenizer, "vocab_size": vocab_size}
    options |= {"val_fraction": val_fraction, "test_fraction": test_fraction}  # explicit: prepare's defaults differ
    command = ["python", "-m", "experiments.prepare", str(path), str(folder)]
    for name, value in options.items():
        command += [f"--{name}", str(value)]
    raise ConfigError(
        f"{path} ({path.stat().st_size / 1e9:.1f} GB) would take about {need / 1e9:.0f} GB in memory, more than "
        f"{MEMORY_SHARE:.0%} of the {available / 1e9:.0f} GB available: prepare it once into token "
        f"ids with `{shlex.join(command)}` and train with --data.source {shlex.quote(str(folder))}"
    )


def windows_at(ids: torch.Tensor, starts: torch.Tensor, length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(N,) token ids, (B,) start positions -> inputs (B, length) and targets (B, length), shifted by one."""
    windows = ids[starts[:, None] + torch.arange(length + 1)]  # (B, length + 1)
    return windows[:, :-1], windows[:, 1:]
