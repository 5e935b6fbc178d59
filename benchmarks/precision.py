"""fp32 against bf16 mixed precision on this machine's CPU: a training step of every preset's network.

    python -m benchmarks.precision [--steps 10] [--repeats 3] [--presets cnn_digits lstm_shakespeare]

Each preset's model and data are built as `python -m experiments.run --config <preset>` builds them, and
trained by a Lightning Trainer for `--steps` steps (after 2 warm-up steps) in `32-true` and in
`bf16-mixed`, alternated `--repeats` times; prints the machine, then per preset the median step time of
each and their ratio, or `unsupported` where torch cannot run the network in bf16 on this CPU (an LSTM
on a CPU without native bf16), and beside it what `--trainer.precision auto` chooses for that network here
(experiments/precision_probe.py, with its cache as a run uses it) with the speed-up it measured itself,
then `ok`, or `SLOWER` where auto's choice trains more than 10% slower than the other precision by this
benchmark's figures (`ok (within noise)` where it is slower by less: repeated runs differ that much).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import statistics
import tempfile
import warnings
from collections.abc import Iterator

import lightning as L
import torch

from experiments.hardware import PrecisionChoice, machine_summary, resolve_precision
from experiments.precision_probe import measured_speedup, network_choice, step_seconds
from experiments.presets import expand_configs, preset_names


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


def auto_choice(model: L.LightningModule, data: L.LightningDataModule) -> tuple[PrecisionChoice, str]:
    """What `--trainer.precision auto` chooses for this network on this CPU, as a run does (its cache too), and
    what it measured (`x1.23`, or the machine's reason where it measures nothing)."""
    machine = resolve_precision("auto", "cpu")
    assert machine is not None
    if machine.precision != "bf16-mixed":
        return machine, "no native bf16"
    speedup = measured_speedup(model, data)
    return network_choice(speedup, model, machine), "not measured" if speedup is None else f"x{speedup:.2f}"


# Repeated runs of this benchmark on one shared 2-core machine differ by up to 10% for the same network
# (lstm_oct4_mafk: x1.19, then x1.05), and so do the probe's: within that, neither precision is measurably faster.
NOISE = 1.10


def verdict(choice: str, speedup: float) -> str:
    """`SLOWER` where auto's choice trains more than NOISE slower than the other precision by the benchmark's
    `speedup` (fp32 time / bf16 time); within NOISE, `ok (within noise)` where the other was faster here."""
    slower = 1 / speedup if choice == "bf16-mixed" else speedup  # the choice's time / the other's
    if slower > NOISE:
        return "SLOWER"
    return "ok (within noise)" if slower > 1 else "ok"


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
        auto, measured = auto_choice(model, data)
        chose = f"auto {auto.precision:10s} ({measured})"
        if unsupported:
            print(f"{preset:27s} fp32 {full * 1e3:7.1f}  bf16-mixed unsupported  {chose} ok")
            print(f"{'':27s} ({unsupported})")
            continue
        mixed = statistics.median(times["bf16-mixed"])
        speedup = full / mixed
        print(
            f"{preset:27s} fp32 {full * 1e3:7.1f}  bf16-mixed {mixed * 1e3:7.1f}  speed-up x{speedup:.2f}  "
            f"{chose} {verdict(auto.precision, speedup)}"
        )


if __name__ == "__main__":
    main()
