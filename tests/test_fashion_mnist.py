"""The default experiment on the full Fashion-MNIST (60k/10k), shortened to one epoch."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from datamodules.image_sources import DEBIAN_FASHION_MNIST
from tests.helpers import run_cli


@pytest.mark.slow
@pytest.mark.skipif(not DEBIAN_FASHION_MNIST.is_dir(), reason="needs Debian's dataset-fashion-mnist")
def test_default_experiment_learns_fashion_mnist(tmp_path: Path) -> None:
    # 150 steps (a third of an epoch), with the preset's time budget lifted so that the result does not depend
    # on the speed of the machine (the budget itself: tests/test_time_budget.py).
    args = ("--trainer.max_epochs", "1", "--trainer.limit_train_batches", "150", "--trainer.max_time", "null")
    args += ("--run.logger", "csv")
    result = run_cli(*args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    (run_dir,) = (tmp_path / "runs" / "cnn_fashion_mnist").iterdir()
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["test/acc"] > 0.83  # 0.87 here after 150 steps; chance is 0.1
    assert (run_dir / "csv" / "metrics.csv").is_file()
