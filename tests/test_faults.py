"""Faults the run must survive: W&B's service dying mid-run, W&B unable to go online."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers import run_cli, wandb_summary


@pytest.mark.slow
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


ONE_EPOCH = ["--config", "cnn_digits", "--trainer.max_epochs", "1"]


@pytest.mark.slow
def test_online_without_credentials_logs_offline(tmp_path: Path) -> None:
    home = tmp_path / "home"  # no ~/.netrc: no `wandb login`
    home.mkdir()
    result = run_cli(*ONE_EPOCH, cwd=tmp_path, env={"WANDB_MODE": "online", "HOME": str(home)})
    assert result.returncode == 0, result.stderr[-3000:]
    assert "warning: WANDB_MODE=online but no W&B credentials" in result.stderr
    (run_dir,) = (tmp_path / "runs" / "cnn_digits").iterdir()
    assert len(list((run_dir / "wandb").glob("offline-run-*"))) == 1
    assert wandb_summary(run_dir)["summary"]["test/acc"] > 0.5  # all there, for `wandb sync`


@pytest.mark.slow
def test_online_without_network_falls_back_to_offline(tmp_path: Path) -> None:
    """A key, but W&B's server cannot be reached (nothing listens on the port): firstlight asks the server
    first, and the run goes on offline at once, with one warning, keeping everything for `wandb sync`."""
    unreachable = {
        "WANDB_MODE": "online",
        "WANDB_API_KEY": "0123456789abcdef0123456789abcdef01234567",
        "WANDB_BASE_URL": "http://127.0.0.1:9",
    }
    result = run_cli(*ONE_EPOCH, cwd=tmp_path, env=unreachable)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stderr.count("warning: W&B could not start an online run") == 1, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    (run_dir,) = (tmp_path / "runs" / "cnn_digits").iterdir()
    assert len(list((run_dir / "wandb").glob("offline-run-*"))) == 1
    summary = wandb_summary(run_dir)
    assert summary["summary"]["test/acc"] > 0.5 and summary["state"] == "finished"
