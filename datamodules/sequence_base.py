"""What the sequence datamodules share: lazy preparation, sharded batching, padding, a saved tokenizer."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from datamodules.base import DataModule
from datamodules.batches import IndexBatches, ShardedOrder, batches_done
from datamodules.special_tokens import PAD_ID
from datamodules.tokenization import Tokenizer, tokenizer_from_json
from validation import check_range


def pad(sequences: list[torch.Tensor], value: int = PAD_ID) -> torch.Tensor:
    """Variable-length 1-D tensors -> (B, longest) padded on the right."""
    return torch.nn.utils.rnn.pad_sequence(sequences, batch_first=True, padding_value=value)


class SequenceDataModule(DataModule):
    """Subclasses implement `build()`, which fills `self.splits` (name -> examples) and `self.tokenizer`,
    and `fetch(split, indices)`, which turns examples into a batch. `build()` runs once, lazily, the
    first time the data or what it tells the model (vocabulary size, ...) is needed."""

    def __init__(self, batch_size: int, seed: int, bucket: bool) -> None:
        super().__init__()
        check_range("batch_size", batch_size, 1)
        self.batch_size = batch_size
        self.seed = seed
        self.bucket = bucket
        self.splits: dict[str, Any] = {}
        self.lengths: dict[str, torch.Tensor] = {}  # per split, for length bucketing
        self.tokenizer: Tokenizer | None = None
        self.restored = False  # from a checkpoint's inference state: the tokenizer, without the data

    def build(self) -> None:
        raise NotImplementedError

    def fetch(self, split: str, indices: torch.Tensor) -> Any:
        raise NotImplementedError

    def num_examples(self, split: str) -> int:
        """A split is a tensor of examples, or a tuple whose first item holds one entry per example."""
        examples = self.splits[split]
        return len(examples[0] if isinstance(examples, tuple) else examples)

    def ready(self) -> SequenceDataModule:
        if not self.splits and not self.restored:
            self.build()
        return self

    def prepare_data(self) -> None:
        self.ready()

    def setup(self, stage: str | None = None) -> None:
        self.ready()
        trainer = self.trainer
        if self.tokenizer is not None and trainer is not None and trainer.is_global_zero:
            # Saved with the run, so its outputs can be decoded and its inputs encoded later.
            directory = Path(trainer.default_root_dir)
            if directory.is_dir():
                self.tokenizer.save(directory / "tokenizer.json")

    def loader(self, split: str, batch_size: int, shuffle: bool) -> IndexBatches:
        self.ready()
        n = self.num_examples(split)
        order = ShardedOrder.for_trainer(self.trainer, n, shuffle=shuffle, seed=self.seed)
        return IndexBatches(
            lambda indices: self.fetch(split, indices),
            batch_size,
            order,
            drop_last=shuffle and n > batch_size,
            lengths=self.lengths.get(split) if self.bucket else None,
        )

    def train_dataloader(self) -> IndexBatches:
        loader = self.loader("train", self.batch_size, shuffle=True)
        loader.progress = batches_done(self.trainer)  # resumable mid-epoch
        return loader

    def val_dataloader(self) -> IndexBatches:
        return self.loader("val", 2 * self.batch_size, shuffle=False)

    def test_dataloader(self) -> IndexBatches:
        return self.loader("test", 2 * self.batch_size, shuffle=False)

    def inference_state(self) -> dict[str, Any]:
        return {"tokenizer": self.tokenizer.to_json()} if self.tokenizer is not None else {}

    def load_inference_state(self, state: dict[str, Any]) -> None:
        if "tokenizer" in state:
            self.tokenizer = tokenizer_from_json(state["tokenizer"])
        self.restored = True

    @property
    def pad_id(self) -> int:
        return PAD_ID

    @property
    def vocab_size(self) -> int:
        tokenizer = self.ready().tokenizer
        if tokenizer is None:  # data without tokens (a time series): no vocabulary to link into the model
            raise AttributeError(f"{type(self).__name__} has no vocabulary")
        return tokenizer.vocab_size
