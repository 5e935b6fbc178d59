"""A LightningModule and a LightningDataModule that know nothing of firstlight train through the command,
as plain LightningCLI allows: firstlight's extras (facts, inference state, media) are optional. A firstlight
task, which builds its core from the data's facts, refuses such a datamodule in one line."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from tests.helpers import run_cli

PLAIN_PAIR = """
import lightning as L
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset


class Blobs(L.LightningDataModule):
    def __init__(self, batch_size: int = 16) -> None:
        super().__init__()
        self.batch_size = batch_size

    def setup(self, stage=None):
        generator = torch.Generator().manual_seed(0)
        labels = torch.randint(0, 2, (256,), generator=generator)
        points = torch.randn(256, 2, generator=generator) + 3 * labels[:, None].float()
        self.train_set = TensorDataset(points[:192], labels[:192])
        self.val_set = TensorDataset(points[192:], labels[192:])

    def train_dataloader(self):
        return DataLoader(self.train_set, batch_size=self.batch_size, shuffle=True)

    def val_dataloader(self):
        return DataLoader(self.val_set, batch_size=self.batch_size)


class Logistic(L.LightningModule):
    def __init__(self, lr: float = 0.5) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.layer = nn.Linear(2, 2)

    def training_step(self, batch, batch_idx):
        points, labels = batch
        loss = nn.functional.cross_entropy(self.layer(points), labels)
        self.log("train/loss", loss)
        return loss

    def validation_step(self, batch, batch_idx):
        points, labels = batch
        self.log("val/loss", nn.functional.cross_entropy(self.layer(points), labels))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.hparams.lr)
"""
PAIR = ["--model", "plain_pair.Logistic", "--model.lr", "0.5", "--data", "plain_pair.Blobs", "--data.batch_size", "16"]
OPTIONS = ["--trainer.max_epochs", "2", "--checkpoint.monitor", "val/loss", "--checkpoint.mode", "min"]


def test_a_plain_lightning_pair_trains_checkpoints_resumes_and_summarises(tmp_path: Path) -> None:
    (tmp_path / "plain_pair.py").write_text(PLAIN_PAIR)
    signal = ["--trainer.callbacks+=tests.signals.SignalAt", "--trainer.callbacks.step=5"]
    stopped = run_cli(*PAIR, *OPTIONS, "--run.logger", "csv", *signal, cwd=tmp_path)
    assert stopped.returncode == 143, stopped.stderr[-3000:]
    (run_dir,) = (tmp_path / "runs").glob("*/*/config.yaml")
    run_dir = run_dir.parent
    assert not (run_dir / "summary.json").exists()
    resumed = run_cli("--run.resume", str(run_dir), cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "Traceback" not in resumed.stderr
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["val/loss"] < 0.69  # below chance (ln 2): it learnt the two blobs apart
    last = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["global_step"] == 2 * 192 // 16  # two epochs of 12 batches: resumed, not trained again


def test_a_firstlight_task_given_a_plain_datamodule_names_the_facts_it_needs(tmp_path: Path) -> None:
    (tmp_path / "plain_pair.py").write_text(PLAIN_PAIR)
    result = run_cli("--config", "cnn_digits", "--data", "plain_pair.Blobs", cwd=tmp_path)
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("error: --data Blobs is a LightningDataModule without firstlight's facts, and the task")
    assert "num_classes" in line and "image_shape" in line and "subclass datamodules.base.DataModule" in line
    assert not (tmp_path / "runs").exists()
