"""fp32 against bf16 mixed precision on this machine's CPU: a training step of every preset's network.

    python -m benchmarks.precision [--steps 10] [--repeats 3] [--presets cnn_digits lstm_shakespeare]

Each preset's model and data are built as `python -m experiments.run --config <preset>` builds them, and
trained by a Lightning Trainer for `--steps` steps (after 2 warm-up steps) in `32-true` and in
`bf16-mixed`, alternated `--repeats` times; prints the machine, then per preset the median step time of
each and their ratio, or `unsupported` where torch cannot run the network in bf16 on this CPU (an LSTM
on a CPU without native bf16). `--trainer.precision auto` follows these figures (experiments/hardware.py).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import statistics
import tempfile
import time
import warnings
from collections.abc import Iterator
from typing import Any

import lightning as L
import torch

from experiments.hardware import machine_summary
from experiments.presets import expand_configs, preset_names


class StepTimes(L.Callback):
    """Wall time of each training step, from the start of one batch to the start of the next."""

    def __init__(self) -> None:
        self.starts: list[float] = []

    def on_train_batch_start(self, *args: Any) -> None:
        self.starts.append(time.perf_counter())

    def on_train_end(self, *args: Any) -> None:
        self.starts.append(time.perf_counter())

    def median(self, warmup: int = 2) -> float:
        steps = [b - a for a, b in zip(self.starts, self.starts[1:], strict=False)]
        return statistics.median(steps[warmup:])


@contextlib.contextmanager
def no_run_identity() -> Iterator[None]:
    """The command's CLI records the run it chose in the environment; a benchmark builds several."""
    saved = dict(os.environ)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def build_preset(preset: str) -> tuple[L.LightningModule, L.LightningDataModule]:
    """The preset's task (its core inside) and datamodule, built by the command's own CLI, which gives the
    data's facts to both (nothing is written)."""
    from experiments.cli import FirstlightCLI

    root = os.path.join(tempfile.gettempdir(), "firstlight-benchmark")  # the CLI makes no folder: nothing is written
    args, _ = expand_configs(["--config", preset, "--run.logger", "none", "--run.root", root])
    with no_run_identity(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", "LightningCLI's args parameter")
        cli = FirstlightCLI(args, preset)
    cli.datamodule.prepare_data()
    return cli.model, cli.datamodule


def step_seconds(model: L.LightningModule, data: L.LightningDataModule, precision: str, steps: int) -> float:
    timer = StepTimes()
    with tempfile.TemporaryDirectory() as scratch:  # what a run keeps (a tokenizer.json) goes nowhere
        trainer = L.Trainer(
            default_root_dir=scratch,
            accelerator="cpu",
            devices=1,
            precision=precision,  # type: ignore[arg-type]
            max_steps=steps + 2,
            limit_val_batches=0,
            num_sanity_val_steps=0,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            callbacks=[timer],
        )
        trainer.fit(model, datamodule=data)
    return timer.median()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--presets", nargs="+", default=preset_names(), choices=preset_names())
    args = parser.parse_args()
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)  # no notices for every Trainer
    print(machine_summary())
    print(f"torch {torch.__version__}; median ms per training step of {args.repeats} x {args.steps} steps")
    for preset in args.presets:
        model, data = build_preset(preset)
        times: dict[str, list[float]] = {"32-true": [], "bf16-mixed": []}
        unsupported = ""
        for _ in range(args.repeats):
            for precision in times:
                if precision == "bf16-mixed" and unsupported:
                    continue
                try:
                    times[precision].append(step_seconds(model, data, precision, args.steps))
                except RuntimeError as error:  # torch has no bf16 kernel for a layer on this CPU
                    if precision == "32-true":
                        raise
                    unsupported = str(error).split(".")[0]
        full = statistics.median(times["32-true"])
        if unsupported:
            print(f"{preset:24s} fp32 {full * 1e3:7.1f}  bf16-mixed unsupported ({unsupported})")
            continue
        mixed = statistics.median(times["bf16-mixed"])
        print(f"{preset:24s} fp32 {full * 1e3:7.1f}  bf16-mixed {mixed * 1e3:7.1f}  speed-up x{full / mixed:.2f}")


if __name__ == "__main__":
    main()
