"""fp32 against bf16 mixed precision on this machine's CPU: training steps of every preset's network.

    python -m benchmarks.precision [--batches 400] [--seconds 4] [--repeats 5] [--presets cnn_digits ...]

Each preset's model and data are built as `python -m experiments.run --config <preset>` builds them, and
the same batches (up to `--batches`, about `--seconds` of steps) are trained by Lightning Trainers in
`32-true` and in `bf16-mixed`, `--repeats` rounds of one of each after one that is not counted; the rounds
go through the presets in turn, so that each preset's are spread over the whole run. Prints the machine,
then per preset fp32 time / bf16-mixed time in total (over the rounds; above 1 where bf16 is faster) with
its 90% interval (Student's t over the rounds), or `unsupported` where torch cannot run the network in bf16
on this CPU (an LSTM on a CPU without native bf16). Beside it: what `--trainer.precision auto` chooses for
that network here (experiments/precision_probe.py, with its cache as a run uses it: delete
~/.cache/firstlight/precision.json to measure afresh), the figure it measured itself (blocks of steps of
each precision within one Trainer, which whole Trainers here check), and the verdict: `ok`, `tie` or
`SLOWER` (`verdict`).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import logging
import os
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field

import lightning as L
import torch

from experiments.hardware import PrecisionChoice, machine_summary, resolve_precision
from experiments.precision_probe import (
    MARGIN,
    Round,
    measured_speedup,
    network_choice,
    quiet_trainers,
    random_state_kept,
    speedup_of,
    step_times,
    timed_steps,
)
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
    # a precision given: the CLI measures nothing (what auto would choose is `auto_choice`'s to say)
    args, _ = expand_configs(["--config", preset, "--run.logger", "none", "--run.root", root])
    args += ["--trainer.precision", "32-true"]
    with no_run_identity(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", "LightningCLI's args parameter")
        cli = FirstlightCLI(args, preset)
    cli.datamodule.prepare_data()
    return cli.model, cli.datamodule


def auto_choice(model: L.LightningModule, data: L.LightningDataModule) -> tuple[PrecisionChoice, str]:
    """What `--trainer.precision auto` chooses for this network on this CPU, as a run does (its cache too), and
    what it measured and in how long (`x1.23 in 12 s`; 0 s: cached), or the machine's reason where it measures
    nothing."""
    machine = resolve_precision("auto", "cpu")
    assert machine is not None
    if machine.precision != "bf16-mixed":
        return machine, "no native bf16"
    started = time.perf_counter()
    speedup = measured_speedup(model, data)
    if speedup is None:
        return machine, "not measured"
    return network_choice(speedup, model, machine), f"x{speedup:.2f} in {time.perf_counter() - started:.0f} s"


def round_seconds(model: L.LightningModule, data: L.LightningDataModule, steps: int, fp32_first: bool) -> Round:
    """Seconds of the first `steps` batches in fp32, and in bf16-mixed, in total (as a run takes them: a typical
    step would mislead, as a network can be faster in bf16 on most batches and twice as slow on some shapes),
    each precision by a whole Trainer of its own on a copy of the model, as a run trains, in the order given."""
    order = ("32-true", "bf16-mixed") if fp32_first else ("bf16-mixed", "32-true")
    totals = {precision: sum(step_times(copy.deepcopy(model), data, steps, precision)) for precision in order}
    return totals["32-true"], totals["bf16-mixed"]


@dataclass
class Timed:
    """A preset's model and data, the batches each Trainer trains, auto's choice and the rounds timed so far."""

    model: L.LightningModule
    data: L.LightningDataModule
    steps: int
    auto: str
    chose: str
    rounds: list[Round] = field(default_factory=list)

    def time_round(self, fp32_first: bool) -> Round:
        with random_state_kept(), quiet_trainers():
            return round_seconds(self.model, self.data, self.steps, fp32_first)


def bf16_fails(model: L.LightningModule, data: L.LightningDataModule) -> str:
    """Why torch cannot train the network in bf16-mixed on this CPU (its message's first sentence), or ""."""
    try:
        with random_state_kept(), quiet_trainers():
            step_times(copy.deepcopy(model), data, 1, "bf16-mixed")
    except RuntimeError as error:
        return str(error).split(".")[0]
    return ""


def verdict(choice: str, speedup: float, low: float, high: float) -> str:
    """`ok` where auto's `choice` is the faster precision by this benchmark's `speedup` (fp32 time / bf16 time);
    `tie` where the other is not measurably faster (by its interval `low`-`high`: above 1 for bf16, above
    MARGIN for fp32, which auto keeps within it); else `SLOWER`."""
    if choice == "bf16-mixed":
        return "ok" if speedup >= 1.0 else "tie" if high >= 1.0 else "SLOWER"
    return "ok" if speedup <= 1.0 else "tie" if low <= MARGIN else "SLOWER"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batches", type=int, default=400, help="batches per Trainer, at most --seconds of them")
    parser.add_argument("--seconds", type=float, default=4.0, help="seconds of steps per Trainer (at least 8 steps)")
    parser.add_argument("--repeats", type=int, default=5, help="Trainers of each precision per preset")
    parser.add_argument("--presets", nargs="+", default=preset_names(), choices=preset_names())
    args = parser.parse_args()
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)  # no notices for every Trainer
    print(machine_summary())
    print(f"torch {torch.__version__}; fp32 time / bf16-mixed time of the same batches, {args.repeats} rounds of a")
    print("Trainer of each precision (90% interval); auto's choice (its own figure, and how long it took), verdict")
    rows, timed = {}, {}
    for preset in args.presets:
        print(f"{preset}: auto's choice, the batches to time", file=sys.stderr, flush=True)
        model, data = build_preset(preset)
        auto, measured = auto_choice(model, data)
        chose = f"auto {auto.precision:10s} ({measured})"
        unsupported = bf16_fails(model, data)
        if unsupported:  # torch has no bf16 kernel for a layer on this CPU
            rows[preset] = f"{preset:27s} bf16-mixed unsupported ({unsupported})  {chose} ok"
            continue
        timed[preset] = Timed(
            model, data, min(args.batches, timed_steps(model, data, args.seconds)), auto.precision, chose
        )
        timed[preset].time_round(fp32_first=False)  # not counted: it pays for each shape's first time
    # one round of each preset in turn: each preset's rounds are spread over the whole run, so that their interval
    # holds the machine's drift over minutes too (a network near parity measures x0.87 one minute, x1.02 the next)
    for round_ in range(args.repeats):
        print(f"round {round_ + 1} of {args.repeats}", file=sys.stderr, flush=True)
        for preset in timed.values():
            preset.rounds.append(preset.time_round(fp32_first=round_ % 2 == 0))
    for name, preset in timed.items():
        speedup, (low, high) = speedup_of(preset.rounds)
        rows[name] = (
            f"{name:27s} {preset.steps:3d} batches x{speedup:.2f} (x{low:.2f}-x{high:.2f})  "
            f"{preset.chose} {verdict(preset.auto, speedup, low, high)}"
        )
    print("\n".join(rows[preset] for preset in args.presets))


if __name__ == "__main__":
    main()
