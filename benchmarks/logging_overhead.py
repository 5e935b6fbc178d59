"""What the W&B logging callbacks cost at their defaults, on the digits preset, side by side.

    python -m benchmarks.logging_overhead [--repeats 3]

Alternates two runs of `cnn_digits` (W&B offline in both): "off" with the media, norm and throughput
callbacks switched off, and "default" with everything at its defaults. Reports the median time per
training step (timed from the end of one batch to the end of the next, so data loading and every
callback hook count) and the median time of a whole validation epoch, where the per-epoch tables run.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import lightning as L

from experiments.run import main as run

OFF = [
    "--samples.every_n_epochs=1000000",
    "--confusion.every_n_epochs=1000000",
    "--norms.every_n_steps=0",
    "--norms.histogram_every_n_steps=0",
    "--throughput.every_n_steps=1000000000",
]


class StepTimer(L.Callback):
    """Writes step_times.json into the run directory: seconds per training batch and per validation."""

    def __init__(self) -> None:
        self.steps: list[float] = []
        self.validations: list[float] = []
        self.last = time.perf_counter()

    def on_train_batch_start(self, trainer: L.Trainer, *args: Any) -> None:
        if trainer.fit_loop.epoch_loop.batch_progress.current.ready == 1:
            self.last = time.perf_counter()  # the first batch of an epoch follows validation: start afresh

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        now = time.perf_counter()
        self.steps.append(now - self.last)
        self.last = now

    def on_validation_epoch_start(self, trainer: L.Trainer, *args: Any) -> None:
        self.validation_started = time.perf_counter()

    def on_validation_epoch_end(self, trainer: L.Trainer, *args: Any) -> None:
        self.validations.append(time.perf_counter() - self.validation_started)

    def on_fit_end(self, trainer: L.Trainer, *args: Any) -> None:
        path = Path(trainer.default_root_dir) / "step_times.json"
        path.write_text(json.dumps({"steps": self.steps[5:], "validations": self.validations[1:]}))


def measure(root: Path, extra: list[str]) -> dict[str, float]:
    os.environ.pop("FIRSTLIGHT_RUN_ID", None)
    before = set(root.glob("cnn_digits/*"))
    args = [
        "--config",
        "cnn_digits",
        "--run.root",
        str(root),
        "--trainer.callbacks+=benchmarks.logging_overhead.StepTimer",
    ]
    assert run([*args, *extra]) == 0
    (run_dir,) = set(root.glob("cnn_digits/*")) - before
    times = json.loads((run_dir / "step_times.json").read_text())
    return {"step": statistics.median(times["steps"]), "validation": statistics.median(times["validations"])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    repeats = parser.parse_args().repeats
    os.environ.setdefault("WANDB_MODE", "offline")
    results: dict[str, list[dict[str, float]]] = {"off": [], "default": []}
    with tempfile.TemporaryDirectory() as scratch:
        for _ in range(repeats):
            results["off"].append(measure(Path(scratch), OFF))
            results["default"].append(measure(Path(scratch), []))
    medians = {
        name: {kind: statistics.median(r[kind] for r in runs) for kind in ("step", "validation")}
        for name, runs in results.items()
    }
    for name, values in medians.items():
        print(f"{name:8s} step {values['step'] * 1000:.2f} ms  validation epoch {values['validation'] * 1000:.1f} ms")
    step_ratio = medians["default"]["step"] / medians["off"]["step"]
    validation_ratio = medians["default"]["validation"] / medians["off"]["validation"]
    print(f"logging callbacks: step x{step_ratio:.3f}, validation epoch x{validation_ratio:.3f} ({repeats} runs each)")


if __name__ == "__main__":
    main()
