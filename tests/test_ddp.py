"""Two real DDP processes on the CPU: one run directory, one W&B run, each rank on half of the data."""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
import pytest
import yaml

from tests.helpers import run_cli, wandb_records, wandb_summary


@pytest.mark.slow
def test_two_process_ddp_makes_one_run(tmp_path: Path) -> None:
    ddp = ["--trainer.accelerator", "cpu", "--trainer.devices", "2", "--trainer.strategy", "ddp"]
    result = run_cli("--config", "cnn_digits", "--trainer.max_epochs", "2", *ddp, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    (run_dir,) = (tmp_path / "runs" / "cnn_digits").iterdir()  # both ranks share one run directory
    assert len(list((run_dir / "wandb").glob("offline-run-*"))) == 1  # and one W&B run, made by rank 0
    assert wandb_summary(run_dir)["state"] == "finished"
    # 1,294 training digits, 647 per rank, 10 full batches of 64 per rank and epoch: the ranks split the data.
    history = [r["history"]["item"] for r in wandb_records(run_dir) if r["type"] == "history"]
    assert [item["trainer/global_step"] for item in history if "val/acc" in item] == [9, 19]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["test/acc"] > 0.8
    best = Path(summary["best_checkpoint"])

    # The same checkpoint tested by one process: the same metrics, because every rank's shard is counted
    # once and losses and metrics are reduced as sums and counts, not as means of per-rank means.
    from datamodules.image import ImageDataModule
    from modules.classification import ClassificationTask

    model = ClassificationTask.load_from_checkpoint(best, weights_only=True)
    precision = yaml.safe_load((run_dir / "config.yaml").read_text())["trainer"]["precision"]  # as resolved
    trainer = L.Trainer(accelerator="cpu", devices=1, precision=precision, logger=False, enable_progress_bar=False)
    (single,) = trainer.test(model, datamodule=ImageDataModule(dataset="digits", batch_size=64), verbose=False)
    for name in ("test/acc", "test/f1", "test/loss"):
        assert summary[name] == pytest.approx(single[name], abs=1e-6), name


@pytest.mark.slow
def test_a_signal_to_one_process_stops_both_at_the_same_step_and_the_run_resumes(tmp_path: Path) -> None:
    """SIGTERM to rank 0 alone as step 7 starts: the processes agree at that batch's end (step 8) and
    both stop there, together."""
    import torch

    ddp = ["--trainer.accelerator", "cpu", "--trainer.devices", "2", "--trainer.strategy", "ddp"]
    args = ["--config", "cnn_digits", "--trainer.max_epochs", "2", *ddp]
    stop = ["--trainer.callbacks+=tests.signals.SignalAt", "--trainer.callbacks.step=7"]
    stopped = run_cli(*args, *stop, cwd=tmp_path)
    assert stopped.returncode == 143, stopped.stderr[-3000:]
    assert "preempted: SIGTERM at step 8" in stopped.stderr and "Traceback" not in stopped.stderr
    (run_dir,) = (tmp_path / "runs" / "cnn_digits").iterdir()
    assert torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 8

    resumed = run_cli("--run.resume", str(run_dir), cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert json.loads((run_dir / "summary.json").read_text())["test/acc"] > 0.8
