"""Run options: early stopping, the CSV logger and no logger, experiment names."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from experiments.run import main


def only_run(root: Path) -> Path:
    (run_dir,) = root.iterdir()
    return run_dir


def test_early_stopping_ends_training_after_patience_runs_out(in_tmp: Path) -> None:
    # val/loss watched in "max" mode while training lowers it: no epoch after the first improves on it, so
    # patience 1 stops training after the second of 40 epochs.
    args = ["--config", "cnn_digits", "--trainer.max_epochs", "40", "--trainer.limit_train_batches", "4"]
    args += [
        "--run.patience",
        "1",
        "--run.logger",
        "csv",
        "--checkpoint.monitor",
        "val/loss",
        "--checkpoint.mode",
        "max",
    ]
    assert main(args) == 0
    run_dir = only_run(in_tmp / "runs" / "cnn_digits")
    with (run_dir / "csv" / "metrics.csv").open() as file:
        losses = {int(row["epoch"]): float(row["val/loss"]) for row in csv.DictReader(file) if row.get("val/loss")}
    assert sorted(losses) == [0, 1] and losses[1] < losses[0]


def test_csv_logger_and_experiment_name(in_tmp: Path) -> None:
    args = [
        "--config",
        "cnn_digits",
        "--trainer.max_epochs",
        "2",
        "--run.logger",
        "csv",
        "--run.experiment",
        "mine",
    ]
    assert main(args) == 0
    run_dir = only_run(in_tmp / "runs" / "mine")
    with (run_dir / "csv" / "metrics.csv").open() as file:
        rows = list(csv.DictReader(file))
    assert any(row.get("val/acc") for row in rows) and any(row.get("test/acc") for row in rows)
    assert not (run_dir / "wandb").exists()


def test_no_logger_still_writes_summary_and_checkpoints(in_tmp: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = [
        "--config",
        "cnn_digits",
        "--trainer.max_epochs",
        "1",
        "--run.logger",
        "none",
        "--run.root",
        "elsewhere",
    ]
    assert main(args) == 0
    run_dir = only_run(in_tmp / "elsewhere" / "cnn_digits")
    files = {p.name for p in run_dir.iterdir()} - {"code.diff"}  # the diff only when the checkout is dirty
    assert files == {"checkpoints", "config.yaml", "history.jsonl", "provenance.json", "report", "summary.json"}
    summary = json.loads((run_dir / "summary.json").read_text())
    assert "test/acc" in summary and summary["run_dir"] == str(run_dir)
    out = capsys.readouterr().out
    assert f"run dir: {run_dir}" in out and "epoch 1/1" in out  # one line per epoch without a progress bar


def test_train_only(in_tmp: Path) -> None:
    args = [
        "--config",
        "cnn_digits",
        "--trainer.max_epochs",
        "1",
        "--run.logger",
        "none",
        "--run.test",
        "false",
    ]
    assert main(args) == 0
    summary = json.loads((only_run(in_tmp / "runs" / "cnn_digits") / "summary.json").read_text())
    assert "val/acc" in summary and "test/acc" not in summary


def test_accumulation_clipping_and_determinism_are_trainer_options(in_tmp: Path) -> None:
    """20 batches per epoch, gradients summed over 4: 5 optimizer steps; clipped; deterministic reruns."""
    import torch

    args = ["--config", "cnn_digits", "--trainer.max_epochs", "1", "--run.logger", "none"]
    args += ["--trainer.accumulate_grad_batches", "4", "--trainer.gradient_clip_val", "0.1"]
    args += ["--trainer.deterministic", "true", "--run.test", "false"]
    assert main(args) == 0 and main(args) == 0
    first, second = sorted((in_tmp / "runs" / "cnn_digits").iterdir())
    weights = []
    for run_dir in (first, second):
        checkpoint = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
        assert checkpoint["global_step"] == 5
        weights.append(checkpoint["state_dict"])
    for name, tensor in weights[0].items():
        assert torch.equal(tensor, weights[1][name]), name


def test_a_profiler_asked_for_replaces_the_free_default(in_tmp: Path) -> None:
    args = ["--config", "cnn_digits", "--trainer.max_epochs", "1", "--run.logger", "none", "--run.test", "false"]
    args += ["--trainer.callbacks+=tests.custom_models.RecordProfiler"]
    assert main(args) == 0
    assert (in_tmp / "profiler.txt").read_text() == "NoProfiler"  # the default: records nothing, costs nothing
    simple = ["--trainer.profiler", "SimpleProfiler", "--trainer.profiler.dirpath", str(in_tmp)]
    simple += ["--trainer.profiler.filename", "p"]
    assert main([*args, *simple]) == 0
    assert (in_tmp / "profiler.txt").read_text() == "SimpleProfiler"
    assert "[Callback]FiniteLoss.on_before_backward" in (in_tmp / "fit-p.txt").read_text()  # every hook timed
