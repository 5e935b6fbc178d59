"""fp32 against dynamic int8 on this machine's CPU: size, latency and test accuracy of trained models.

    python -m benchmarks.quantization                                   # trains both presets, then measures
    python -m benchmarks.quantization --runs runs/lstm_sentiment/RUN runs/transformer_sentiment/RUN
    python -m benchmarks.quantization --max_steps 2 --repeats 3         # a tiny check that it all runs

Without `--runs`, trains each of `--presets` (default `lstm_sentiment` and `transformer_sentiment`) with
its own full settings, as `python -m experiments.run --config <preset>` does (a few minutes each on a
2-core CPU; `--max_steps N` cuts training short, for a quick check), into `--root`; with `--runs`, measures
those classification runs instead. Each model is loaded from its (best) checkpoint with
`experiments.trained.load_trained`, and `analysis.quantize.quantize_dynamic_int8` makes its int8 copy (Linear,
LSTM and GRU layers; embeddings stay fp32). Its test split is rebuilt from the checkpoint's datamodule
arguments (same source, split seed and tokenizer, checked against the checkpoint's). Per model, fp32 and
int8 side by side:

- size: bytes of the serialized state dict of the core (`torch.save`; int8 as `experiments.shrink` writes
  it), and of its Linear/LSTM/GRU layers alone;
- latency: median milliseconds of `--repeats` forward passes in inference mode, after `--warmup`, of a
  batch of the first 64 test examples and of the single test example of median length, on 1 thread and on
  all of torch's threads; fp32 and int8 take turns, so both see the same load on the machine;
- test accuracy over the whole test split, its change in points, and how many predictions changed.

Prints the machine (CPU model, threads), then per run a line naming it and three rows: fp32, int8, and
int8/fp32.
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from analysis.quantize import INT8_TYPES, QUANTIZED_LAYERS, int8_state_dict, quantize_dynamic_int8
from datamodules.base import DataModule
from datamodules.sequence_base import SequenceDataModule
from experiments.hardware import machine_summary
from experiments.resume import RESUME_ENV, RUN_DIR_ENV, RUN_ID_ENV
from experiments.trained import load_trained, rebuilt_data
from validation import ConfigError

PRESETS = ("lstm_sentiment", "transformer_sentiment")
BATCH = 64


def train(preset: str, root: Path, max_steps: int | None) -> Path:
    """The run directory of `python -m experiments.run --config <preset>` (W&B off), trained in a process of
    its own; its progress goes to stderr."""
    command = [sys.executable, "-m", "experiments.run", "--config", preset, "--run.root", str(root)]
    command += ["--run.logger", "none"]
    if max_steps is not None:  # a quick check: a few steps
        command += [f"--trainer.max_steps={max_steps}", "--trainer.limit_val_batches=2"]
    env = {k: v for k, v in os.environ.items() if k not in (RUN_ID_ENV, RUN_DIR_ENV, RESUME_ENV)}
    done = subprocess.run(command, stdout=subprocess.PIPE, text=True, env=env)
    print(done.stdout, file=sys.stderr, end="")
    lines = [line for line in done.stdout.splitlines() if line.startswith("run dir: ")]
    if done.returncode != 0 or not lines:
        raise SystemExit(f"training {preset} failed (exit code {done.returncode}): {' '.join(command)}")
    return Path(lines[-1].removeprefix("run dir: "))


def serialized_bytes(state: dict[str, object]) -> int:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getbuffer().nbytes


def sizes(net: nn.Module) -> tuple[int, int]:
    """Bytes of the serialized state dict of the core, and of its Linear/LSTM/GRU layers' part of it."""
    int8 = any(isinstance(module, INT8_TYPES) for module in net.modules())
    state = int8_state_dict(net) if int8 else net.state_dict()
    kinds = INT8_TYPES if int8 else QUANTIZED_LAYERS
    prefixes = tuple(f"{name}." for name, module in net.named_modules() if isinstance(module, kinds))
    return serialized_bytes(state), serialized_bytes({k: v for k, v in state.items() if k.startswith(prefixes)})


def latency_inputs(data: DataModule) -> tuple[torch.Tensor, torch.Tensor]:
    """A batch of the first 64 test examples (padded to the longest), and the test example of median length."""
    if isinstance(data, SequenceDataModule):
        lengths = data.lengths["test"]
        batch = data.fetch("test", torch.arange(min(BATCH, len(lengths))))[0]
        single = data.fetch("test", lengths.argsort()[len(lengths) // 2 : len(lengths) // 2 + 1])[0]
        return batch, single
    inputs = next(iter(data.test_dataloader()))[0]
    return inputs[:BATCH], inputs[:1]


@torch.inference_mode()
def latencies(
    nets: dict[str, nn.Module], inputs: torch.Tensor, threads: int, repeats: int, warmup: int
) -> dict[str, float]:
    """Median seconds per forward pass of each net on `inputs` with `threads` threads, the nets taking turns."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        times: dict[str, list[float]] = {name: [] for name in nets}
        for repeat in range(warmup + repeats):
            order = list(nets) if repeat % 2 == 0 else list(reversed(nets))
            for name in order:
                started = time.perf_counter()
                nets[name](inputs)
                if repeat >= warmup:
                    times[name].append(time.perf_counter() - started)
    finally:
        torch.set_num_threads(previous)
    return {name: statistics.median(values) for name, values in times.items()}


@torch.inference_mode()
def predictions(net: nn.Module, data: DataModule) -> tuple[torch.Tensor, torch.Tensor]:
    """(predicted classes, labels) over the whole test split."""
    guesses, labels = [], []
    for inputs, targets in data.test_dataloader():
        guesses.append(net(inputs).argmax(-1))
        labels.append(targets)
    return torch.cat(guesses), torch.cat(labels)


@dataclass
class Measured:
    size: int
    layer_size: int
    milliseconds: list[float]  # batch on 1 thread, batch on all, single on 1 thread, single on all
    accuracy: float
    guesses: torch.Tensor


def header(threads: int) -> str:
    latency = f"{'batch 1T':>9} {f'batch {threads}T':>9} {'single 1T':>9} {f'single {threads}T':>9}"
    return f"{'model':<12} {'size MB':>8} {'layers MB':>9} {latency} {'test acc':>8} {'change':>9} {'changed':>9}"


def row(name: str, m: Measured) -> str:
    latency = " ".join(f"{ms:>9.2f}" for ms in m.milliseconds)
    return f"{name:<12} {m.size / 1e6:>8.2f} {m.layer_size / 1e6:>9.3f} {latency} {m.accuracy:>8.4f}"


def ratio_row(full: Measured, int8: Measured, changed: int, total: int) -> str:
    def times(a: float, b: float, width: int) -> str:
        return f"{f'x{b / a:.2f}':>{width}}"

    latency = " ".join(times(a, b, 9) for a, b in zip(full.milliseconds, int8.milliseconds, strict=True))
    change = f"{(int8.accuracy - full.accuracy) * 100:+.2f} pt"
    sizes = f"{times(full.size, int8.size, 8)} {times(full.layer_size, int8.layer_size, 9)}"
    return f"{'int8/fp32':<12} {sizes} {latency} {'':>8} {change:>9} {f'{changed}/{total}':>9}"


def measure(run: Path | str, root: Path, repeats: int, warmup: int, threads: int) -> None:
    trained = load_trained(str(run), root)
    if not trained.task.classifies:
        raise ConfigError(f"{run} is not a classification run; this benchmark measures test accuracy")
    data = rebuilt_data(trained)  # the run's test split, seeded; refused if its tokenizer differs
    batch, single = latency_inputs(data)
    nets = {"fp32": trained.task.net.eval().requires_grad_(False), "int8": quantize_dynamic_int8(trained.task.net)}
    measured: dict[str, Measured] = {}
    milliseconds: dict[str, list[float]] = {name: [] for name in nets}
    for inputs in (batch, single):
        for count in (1, threads):
            for name, seconds in latencies(nets, inputs, count, repeats, warmup).items():
                milliseconds[name].append(seconds * 1e3)
    for name, net in nets.items():
        guesses, labels = predictions(net, data)
        accuracy = float((guesses == labels).float().mean())
        measured[name] = Measured(*sizes(net), milliseconds[name], accuracy, guesses)
    where = trained.run_dir or trained.checkpoint
    experiment = trained.run_dir.parent.name if trained.run_dir else trained.checkpoint.stem
    shapes = f"batch {tuple(batch.shape)}, single {tuple(single.shape)}"
    print(f"\n{experiment}: {where} ({trained.note}); {len(labels):,} test examples; inputs {shapes}")
    print(header(threads))
    print(row("fp32", measured["fp32"]))
    print(row("int8", measured["int8"]))
    changed = int((measured["fp32"].guesses != measured["int8"].guesses).sum())
    print(ratio_row(measured["fp32"], measured["int8"], changed, len(labels)), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", nargs="+", help="trained classification runs (directories or ids) to measure")
    parser.add_argument("--presets", nargs="+", default=list(PRESETS), help="presets to train, without --runs")
    parser.add_argument("--root", type=Path, default=Path("runs"), help="where runs are trained and ids looked up")
    parser.add_argument("--max_steps", type=int, help="train only this many steps (a quick check)")
    parser.add_argument("--repeats", type=int, default=50, help="timed forward passes per latency")
    parser.add_argument("--warmup", type=int, default=5, help="untimed forward passes before them")
    args = parser.parse_args()
    threads = torch.get_num_threads()
    print(machine_summary())
    print(
        f"torch {torch.__version__}, int8 engine {torch.backends.quantized.engine}; latency: median ms of "
        f"{args.repeats} forward passes after {args.warmup}, in inference mode, on 1 thread (1T) and {threads} "
        f"(the batch: the first {BATCH} test examples; single: the test example of median length); "
        "layers: the Linear/LSTM/GRU layers alone"
    )
    runs: list[Path | str] = list(args.runs or [])
    if not runs:
        for preset in args.presets:
            started = time.perf_counter()
            runs.append(train(preset, args.root, args.max_steps))
            print(f"trained {preset} in {time.perf_counter() - started:.0f} s: {runs[-1]}", flush=True)
    try:
        for run in runs:
            measure(run, args.root, args.repeats, args.warmup, threads)
    except ConfigError as error:
        raise SystemExit(f"error: {error}") from None


if __name__ == "__main__":
    main()
