"""A preset learns what it should in a short run of its own settings. The full runs of the presets and their
bars are a benchmark (`make quality`, benchmarks/quality.py); whether each preset's data holds what its labels
say is tested against the references fitted on the same splits (tests/test_benchmarks.py, the baselines)."""

from __future__ import annotations

import json
from pathlib import Path

from experiments.run import main


def summary_of(preset: str, cwd: Path, *args: str) -> dict[str, float]:
    assert main(["--config", preset, "--run.logger", "csv", *args]) == 0
    (run_dir,) = (cwd / "runs" / preset).iterdir()
    return json.loads((run_dir / "summary.json").read_text())


def test_lstm_forecasts_sunspots_better_than_repeating_the_last_year_within_ten_epochs(in_tmp: Path) -> None:
    summary = summary_of("lstm_sunspots", in_tmp, "--trainer.max_epochs=10")  # of 150; ~60 steps
    assert summary["test/mse"] < 0.8 * summary["test/mse_naive"]  # 0.58 after 10 epochs, 0.36 after 150
