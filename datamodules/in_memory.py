"""The batching that datamodules holding their splits as tensors in memory share (images, audio clips)."""

from __future__ import annotations

from typing import Any

import torch

from datamodules.base import DataModule
from datamodules.batches import IndexBatches, ShardedOrder, batches_done, tensor_batches


class InMemoryDataModule(DataModule):
    """Splits held as tensors, `self.splits[split] = (inputs (N, ...), labels (N,))`, loaded by `setup`.

    Batches are slices of them, with no per-sample Python work; they cross to the device in their compact
    stored dtype (uint8 pixels, int16 samples) and `prepare_batch` turns them into model inputs there.
    Evaluation batches are 4x the training batch size (no gradients to hold).
    """

    splits: dict[str, tuple[torch.Tensor, torch.Tensor]]
    batch_size: int

    def prepare_batch(self, batch: Any, training: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """A batch as stored -> (model inputs, labels) on the device, augmented while `training`."""
        raise NotImplementedError

    def loader(self, split: str, batch_size: int, shuffle: bool) -> IndexBatches:
        self.setup("fit")  # loads every split, once
        inputs, labels = self.splits[split]
        order = ShardedOrder.for_trainer(self.trainer, len(labels), shuffle=shuffle, seed=self.hparams["seed"])
        return tensor_batches((inputs, labels), batch_size, order, drop_last=shuffle and len(labels) > batch_size)

    def train_dataloader(self) -> IndexBatches:
        loader = self.loader("train", self.batch_size, shuffle=True)
        loader.progress = batches_done(self.trainer)  # resumable mid-epoch
        return loader

    def val_dataloader(self) -> IndexBatches:
        return self.loader("val", 4 * self.batch_size, shuffle=False)

    def test_dataloader(self) -> IndexBatches:
        return self.loader("test", 4 * self.batch_size, shuffle=False)

    def predict_dataloader(self) -> IndexBatches:
        return self.test_dataloader()

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        return self.prepare_batch(batch, training=self.trainer is not None and self.trainer.training)
