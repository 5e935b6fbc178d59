"""Language modelling: Shakespeare's complete works by default, or any UTF-8 text file of the user's."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from datamodules.batches import IndexBatches
from datamodules.sequence_base import SequenceDataModule
from datamodules.text_sources import read_text_file, shakespeare
from datamodules.tokenization import CharTokenizer, TokenizerKind, train_tokenizer
from validation import ConfigError, check_range


class LanguageModelDataModule(SequenceDataModule):
    """One text cut by position into train | val | test (contiguous, in that order: no leakage), tokenized,
    and cut into windows of `context_length + 1` tokens -> batches (inputs (B, T), targets (B, T)), targets
    being the inputs shifted by one.

    Validation and test windows are fixed consecutive chunks, validation's in a fixed random order, so that
    `--trainer.limit_val_batches N` estimates the loss from a sample of the whole split. Training windows
    start at a random offset within their chunk, drawn anew every epoch (from `seed` and the epoch, so a
    resumed run draws the same): across epochs every character is predicted from every amount of context,
    as with nanoGPT's random windows, while an epoch still covers the text about once.

    Args:
        source: "shakespeare" (5.06 M characters) or the path of a UTF-8 text file.
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
        source: str = "shakespeare",
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

    def build(self) -> None:
        hp = self.hparams
        text = shakespeare() if hp["source"] == "shakespeare" else read_text_file(Path(hp["source"]))
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

    def fetch(self, split: str, indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        windows = self.splits[split][indices]
        return windows[:, :-1], windows[:, 1:]

    def loader(self, split: str, batch_size: int, shuffle: bool) -> IndexBatches:
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


def windows_at(ids: torch.Tensor, starts: torch.Tensor, length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(N,) token ids, (B,) start positions -> inputs (B, length) and targets (B, length), shifted by one."""
    windows = ids[starts[:, None] + torch.arange(length + 1)]  # (B, length + 1)
    return windows[:, :-1], windows[:, 1:]
