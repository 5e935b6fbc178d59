"""Presets learn what they should, in short runs of their own settings (the full runs and their bars:
`make quality`, benchmarks/quality.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from experiments.run import main


def summary_of(preset: str, cwd: Path, *args: str) -> dict[str, float]:
    assert main(["--config", preset, "--run.logger", "csv", *args]) == 0
    (run_dir,) = (cwd / "runs" / preset).iterdir()
    return json.loads((run_dir / "summary.json").read_text())


def test_lstm_forecasts_sunspots_better_than_repeating_the_last_year_within_ten_epochs(in_tmp: Path) -> None:
    summary = summary_of("lstm_sunspots", in_tmp, "--trainer.max_epochs=10")  # of 150; ~60 steps
    assert summary["test/mse"] < 0.8 * summary["test/mse_naive"]  # 0.58 after 10 epochs, 0.36 after 150


@pytest.mark.slow
def test_lstm_tells_fresh_from_rotten_within_two_epochs(in_tmp: Path) -> None:
    summary = summary_of("lstm_sentiment", in_tmp, "--trainer.max_epochs=2")  # of 6
    assert summary["test/acc"] > 0.62  # 57.8% of the snippets are fresh: a constant guess stays below (0.68 here)
