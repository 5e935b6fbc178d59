"""What the W&B logging callbacks cost at their defaults, on the digits preset, measured two ways.

    python -m benchmarks.logging_overhead [--repeats 5]

1. Directly: in runs with every callback at its defaults, the time spent inside the hooks of the logging
   callbacks (sample tables, confusion matrix, norms and histograms, throughput and its FLOP count,
   attention maps), as a share of the training time (training batches and validation epochs). Precise,
   but blind to indirect costs such as the W&B service process competing for the cores.
2. Side by side: runs alternated with those callbacks off and at their defaults (W&B offline in both);
   the ratio default / off of the mean training step and of the validation epoch, per pair of runs. It
   catches everything, but on a 2-core machine two identical runs differ by up to ~15%, so its median
   over the repeats is the figure and its spread the noise.

Each training step is timed from the end of one batch to the end of the next, so data loading and every
callback hook count; the first five steps are warm-up and left out.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import lightning as L

from callbacks.attention import AttentionMaps
from callbacks.norms import ParameterNorms
from callbacks.throughput import Throughput
from callbacks.wandb_media import ConfusionMatrix, PredictionSamples
from experiments.hardware import machine_summary
from experiments.run import main as run

LOGGING_CALLBACKS = (PredictionSamples, ConfusionMatrix, ParameterNorms, Throughput, AttentionMaps)
OFF = [
    "--samples.every_n_epochs=1000000",
    "--confusion.every_n_epochs=1000000",
    "--norms.every_n_steps=0",
    "--norms.histogram_every_n_steps=0",
    "--throughput.every_n_steps=1000000000",
    "--throughput.count_flops=false",
    "--attention.every_n_epochs=1000000",
]


class StepTimer(L.Callback):
    """Writes step_times.json into the run directory: seconds per training batch, per validation epoch,
    and inside the hooks of the logging callbacks (which it wraps with timers when fitting starts)."""

    def __init__(self) -> None:
        self.steps: list[float] = []
        self.validations: list[float] = []
        self.hook_seconds = 0.0
        self.last = time.perf_counter()

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        for callback in trainer.callbacks:  # type: ignore[attr-defined]
            if isinstance(callback, LOGGING_CALLBACKS):
                for name in dir(type(callback)):
                    if name.startswith("on_") and getattr(type(callback), name) is not getattr(L.Callback, name, None):
                        setattr(callback, name, self.timed(getattr(callback, name)))

    def timed(self, hook: Any) -> Any:
        @functools.wraps(hook)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return hook(*args, **kwargs)
            finally:
                self.hook_seconds += time.perf_counter() - started

        return wrapper

    def on_train_batch_start(self, trainer: L.Trainer, *args: Any) -> None:
        if trainer.fit_loop.epoch_loop.batch_progress.current.ready == 1:
            self.last = time.perf_counter()  # the first batch of an epoch follows validation: start afresh
        if len(self.steps) == 5:
            self.hook_seconds = 0.0  # warm-up over: count from here, like the steps

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        now = time.perf_counter()
        self.steps.append(now - self.last)
        self.last = now

    def on_validation_epoch_start(self, trainer: L.Trainer, *args: Any) -> None:
        self.validation_started = time.perf_counter()

    def on_validation_epoch_end(self, trainer: L.Trainer, *args: Any) -> None:
        self.validations.append(time.perf_counter() - self.validation_started)

    def on_fit_end(self, trainer: L.Trainer, *args: Any) -> None:
        times = {"steps": self.steps[5:], "validations": self.validations, "hook_seconds": self.hook_seconds}
        (Path(trainer.default_root_dir) / "step_times.json").write_text(json.dumps(times))


def measure(root: Path, extra: list[str]) -> dict[str, float]:
    """One run of the preset: its mean step, total validation time, and the logging hooks' share."""
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
    training = sum(times["steps"]) + sum(times["validations"])
    return {
        "mean step": statistics.fmean(times["steps"]),
        "validation": statistics.median(times["validations"]),
        "hook share": times["hook_seconds"] / training,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    repeats = parser.parse_args().repeats
    print(machine_summary())  # the figures below hold for this hardware
    os.environ.setdefault("WANDB_MODE", "offline")
    results: dict[str, list[dict[str, float]]] = {"off": [], "default": []}
    with tempfile.TemporaryDirectory() as scratch:
        for _ in range(repeats):  # alternated, so drifts in machine speed hit both alike
            results["off"].append(measure(Path(scratch), OFF))
            results["default"].append(measure(Path(scratch), []))
    for name, runs in results.items():
        step = statistics.median(r["mean step"] for r in runs) * 1000
        validation = statistics.median(r["validation"] for r in runs) * 1000
        print(f"{name:8s} mean step {step:.2f} ms  validation epoch {validation:.1f} ms")
    shares = [r["hook share"] for r in results["default"]]
    spread = ", ".join(f"{share:.2%}" for share in shares)
    print(f"inside the logging callbacks' hooks: {statistics.median(shares):.2%} of training time ({spread})")
    for kind in ("mean step", "validation"):
        pairs = [d[kind] / o[kind] for d, o in zip(results["default"], results["off"], strict=True)]
        spread = ", ".join(f"{ratio:.3f}" for ratio in pairs)
        print(f"{kind:10s} default/off: median x{statistics.median(pairs):.3f} (pairs: {spread})")
    print(f"({repeats} runs of each, alternated; W&B offline in both)")


if __name__ == "__main__":
    main()
