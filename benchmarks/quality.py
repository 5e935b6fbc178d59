"""How well the presets learn: each trained in full, as users run it, and its test figures held to a bar.

    python -m benchmarks.quality [--checks digits sunspots ...]     (or: make quality)

Minutes of training each on 2 CPU cores, so not part of the test suite: the tests keep a short run of the
same behaviour (the loss falls within a few steps, a short run beats chance); these are the figures. Each
check is `python -m experiments.run --config <preset> --run.logger csv` in this process, one after the
other, and reads the run's summary.json. The bars are the claims of the README and the presets' comments:

- fashion: `cnn_fashion_mnist`, the default experiment, above 92% test accuracy (logistic regression on the
  pixels: 84.5%);
- digits: `cnn_digits` (20 epochs) above 95% test accuracy (chance 10%), macro F1 above 0.9, loss below 0.3;
- sunspots: `lstm_sunspots` test MSE below 0.6 of repeating the last year, and below 0.281, the linear
  autoregression on the same 24 years (`python -m benchmarks.baselines --presets lstm_sunspots`);
- sentiment: `lstm_sentiment` above 66% test accuracy (57.8% of the snippets are fresh);
- keywords: `cnn_speech_commands` above 85% test accuracy on voices never heard in training (chance 10%;
  needs espeak-ng);
- tagging: `lstm_turkish_pos` above 90.86% of the Turkish Web Treebank's test words tagged right, the most
  frequent training tag per word, with unseen words tagged by their longest known ending
  (`python -m benchmarks.baselines --presets lstm_turkish_pos`).

Prints the machine, then one row per check (its figures, the bar, PASS or FAIL); exits 1 if any fails.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from experiments.hardware import machine_summary


@dataclass(frozen=True)
class Check:
    preset: str
    bar: str  # the claim, in words
    passes: Callable[[dict[str, float]], bool]
    shown: tuple[str, ...]  # summary metrics printed
    needs: str | None = None  # a program on PATH, else the check is skipped


CHECKS = {
    "fashion": Check("cnn_fashion_mnist", "test/acc > 0.92", lambda s: s["test/acc"] > 0.92, ("test/acc", "test/f1")),
    "digits": Check(
        "cnn_digits",
        "test/acc > 0.95, test/f1 > 0.9, test/loss < 0.3",
        lambda s: s["test/acc"] > 0.95 and s["test/f1"] > 0.9 and s["test/loss"] < 0.3,
        ("test/acc", "test/f1", "test/loss"),
    ),
    "sunspots": Check(
        "lstm_sunspots",
        "test/mse < 0.6 test/mse_naive and < 0.281 (linear AR)",
        lambda s: s["test/mse"] < 0.6 * s["test/mse_naive"] and s["test/mse"] < 0.281,
        ("test/mse", "test/mse_naive"),
    ),
    "sentiment": Check("lstm_sentiment", "test/acc > 0.66", lambda s: s["test/acc"] > 0.66, ("test/acc",)),
    "keywords": Check(
        "cnn_speech_commands", "test/acc > 0.85", lambda s: s["test/acc"] > 0.85, ("test/acc",), "espeak-ng"
    ),
    "tagging": Check(
        "lstm_turkish_pos",
        "test/acc > 0.9086 (the most frequent tag per word, else per word ending)",
        lambda s: s["test/acc"] > 0.9086,
        ("test/acc",),
    ),
}


def trained(preset: str, root: Path) -> dict[str, float]:
    """The preset's full run in this process; its summary.json."""
    from experiments.run import main as run

    os.environ.pop("FIRSTLIGHT_RUN_ID", None)
    if run(["--config", preset, "--run.logger", "csv", "--run.root", str(root)]) != 0:
        raise SystemExit(f"experiments.run --config {preset} failed")
    (run_dir,) = (root / preset).iterdir()
    return json.loads((run_dir / "summary.json").read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checks", nargs="+", default=list(CHECKS), choices=list(CHECKS))
    args = parser.parse_args()
    print(machine_summary())  # the times below hold for this hardware; the figures for seed 0
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    failed = []
    with tempfile.TemporaryDirectory() as directory:
        for name in args.checks:
            check = CHECKS[name]
            if check.needs and shutil.which(check.needs) is None:
                print(f"{name:10s} {check.preset:22s} skipped: needs {check.needs}")
                continue
            started = time.perf_counter()
            summary = trained(check.preset, Path(directory) / name)
            figures = "  ".join(f"{metric} {summary[metric]:.4f}" for metric in check.shown)
            verdict = "PASS" if check.passes(summary) else "FAIL"
            if verdict == "FAIL":
                failed.append(name)
            seconds = time.perf_counter() - started
            row = f"{name:10s} {check.preset:22s} {figures}  bar: {check.bar}  {verdict}  ({seconds:.0f} s)"
            print(row, flush=True)
    if failed:
        print(f"below the bar: {', '.join(failed)}")
        sys.exit(1)


if __name__ == "__main__":
    main()
