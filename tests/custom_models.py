"""A user's own LightningModule, given to the CLI by class path (it takes num_classes, not image_shape)."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch import nn

from datamodules.image import ImageDataModule


class LinearProbe(L.LightningModule):
    def __init__(self, num_classes: int = 3, lr: float = 0.1) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.layer = nn.LazyLinear(num_classes)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        images, labels = batch
        loss = nn.functional.cross_entropy(self.layer(images.flatten(1)), labels)
        self.log("train/loss", loss)
        return loss

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        images, labels = batch
        self.log("val/loss", nn.functional.cross_entropy(self.layer(images.flatten(1)), labels))

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        images, labels = batch
        accuracy = (self.layer(images.flatten(1)).argmax(-1) == labels).float().mean()
        self.log("test/acc", accuracy)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=self.hparams["lr"])


class RecordProfiler(L.Callback):
    """Writes the class name of the trainer's profiler to ./profiler.txt."""

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        Path("profiler.txt").write_text(type(trainer.profiler).__name__)


class MinimalModule(L.LightningModule):
    """Lightning's own minimal example: a training step and an optimizer, no validation or test step."""

    def __init__(self, num_classes: int = 3) -> None:
        super().__init__()
        self.layer = nn.LazyLinear(num_classes)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        images, labels = batch
        return nn.functional.cross_entropy(self.layer(images.flatten(1)), labels)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


class SignalledDigits(ImageDataModule):
    """The digits; this process receives `signal_name` while the data is prepared (the command's set-up)."""

    def __init__(self, signal_name: str = "SIGTERM", **options: Any) -> None:
        super().__init__(**options)
        self.signal_name = signal_name

    def prepare_data(self) -> None:
        os.kill(os.getpid(), getattr(signal, self.signal_name))
        super().prepare_data()
