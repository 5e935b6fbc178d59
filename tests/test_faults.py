"""Faults the run must survive: W&B's service dying mid-run."""

from __future__ import annotations

import json
from pathlib import Path

from tests.test_cli import run_cli


def test_a_run_outlives_its_wandb_service(tmp_path: Path) -> None:
    """SIGTERM to wandb-core at step 25: one warning, W&B logging stops, training, checkpoints, history and
    the summary go on to the end."""
    args = ["--config", "cnn_digits", "--trainer.max_epochs", "3"]
    stop = ["--trainer.callbacks+=tests.signals.StopWandbService", "--trainer.callbacks.step=25"]
    result = run_cli(*args, *stop, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stderr.count("warning: W&B stopped") == 1 and "Traceback" not in result.stderr
    (run_dir,) = (tmp_path / "runs" / "cnn_digits").iterdir()
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["test/acc"] > 0.8
    steps = [json.loads(line)["step"] for line in (run_dir / "history.jsonl").read_text().splitlines()]
    assert max(steps) >= 59  # every epoch logged locally
    assert json.loads((run_dir / "summary.json").read_text())["run_dir"] == str(run_dir)
