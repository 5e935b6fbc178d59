"""Full presets learn what they should (slow: minutes on 2 CPU cores)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers import run_cli


def summary_of(preset: str, cwd: Path, *args: str) -> dict[str, float]:
    result = run_cli("--config", preset, "--run.logger", "csv", *args, cwd=cwd)
    assert result.returncode == 0, result.stderr[-3000:]
    (run_dir,) = (cwd / "runs" / preset).iterdir()
    return json.loads((run_dir / "summary.json").read_text())


@pytest.mark.slow
def test_lstm_forecasts_sunspots_far_better_than_repeating_the_last_year(tmp_path: Path) -> None:
    summary = summary_of("lstm_sunspots", tmp_path)
    assert summary["test/mse"] < 0.6 * summary["test/mse_naive"]
    assert summary["test/mse"] < 0.281  # the linear autoregression on the same 24 years (benchmarks.baselines)


@pytest.mark.slow
def test_lstm_tells_fresh_from_rotten(tmp_path: Path) -> None:
    summary = summary_of("lstm_sentiment", tmp_path)
    assert summary["test/acc"] > 0.66  # 57.8% of the snippets are fresh: a constant guess stays below
