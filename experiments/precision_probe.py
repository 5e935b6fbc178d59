"""`--trainer.precision auto` per network on a CPU with native bf16: bf16-mixed only where it is measured faster.

Native bf16 makes most networks train faster in bf16-mixed (x1.1-x1.6 per step, `python -m benchmarks.precision`),
but not all: on a 2-core AMD EPYC the ViT trains x0.65 as fast and the GRU encoder-decoder x0.9. Which ones
depends on the CPU, the threads, the network and its batch, so it is measured on this machine before the run
trains: real training steps of copies of the run's model on the run's data, by Trainers of their own that
keep nothing, in 32-true and bf16-mixed alternated (about 0.6 s of steps per round, so a
short step is timed often), with every random number generator restored afterwards: the run trains exactly
as it would without the measurement. bf16-mixed is kept where it is at least `MARGIN` faster; else 32-true,
which is never wrong. The answer is cached per CPU, torch version, threads, network, data and batch size in
`~/.cache/firstlight/precision.json` (`$XDG_CACHE_HOME`): each is measured once per machine, in seconds,
by the first run that trains at least MIN_RUN_STEPS steps (a shorter one uses the cache, or the machine's choice).
Only firstlight's tasks on firstlight's datamodules are measured (a user's own LightningModule gets the
machine's choice), and only single-process runs (ranks measuring apart could disagree).
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import os
import random
import signal
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from torch import nn

from datamodules.cache import firstlight_cache
from experiments.hardware import PrecisionChoice, cpu_name
from experiments.tracking import silenced

MARGIN = 1.05  # bf16 must be 5% faster: within the noise of a few timed steps, fp32 (exact, never slower) wins
WARMUP, ROUNDS = 2, 3  # untimed steps per Trainer; alternated rounds of each precision
MIN_STEPS, MAX_STEPS, TIMED_SECONDS = 6, 100, 0.6  # timed steps per round: about TIMED_SECONDS of them
MIN_RUN_STEPS = 200  # a shorter run uses a measurement already cached, but does not measure


def cache_file() -> Path:
    return firstlight_cache() / "precision.json"


@contextlib.contextmanager
def random_state_kept() -> Iterator[None]:
    """Every generator a run draws from (torch, numpy, random) as it was before the block."""
    states = torch.get_rng_state(), np.random.get_state(), random.getstate()
    try:
        yield
    finally:
        torch.set_rng_state(states[0])
        np.random.set_state(states[1])
        random.setstate(states[2])


class StepTimes(L.Callback):
    """Wall time of each training step, from the start of one batch to the start of the next."""

    def __init__(self) -> None:
        self.starts: list[float] = []

    def on_train_batch_start(self, *args: Any) -> None:
        self.starts.append(time.perf_counter())

    def on_train_end(self, *args: Any) -> None:
        self.starts.append(time.perf_counter())

    def steps(self) -> list[float]:
        return [b - a for a, b in zip(self.starts, self.starts[1:], strict=False)]


def step_times(model: L.LightningModule, data: L.LightningDataModule, precision: str, steps: int) -> list[float]:
    """The wall times of `steps` training steps of `model` on `data` in `precision` (after WARMUP untimed
    ones), by a Trainer of its own on the CPU that keeps nothing (no logger, checkpoint or validation)."""
    timer = StepTimes()
    with tempfile.TemporaryDirectory() as scratch:  # what a datamodule saves (a tokenizer.json) goes nowhere
        trainer = L.Trainer(
            default_root_dir=scratch,
            accelerator="cpu",
            devices=1,
            precision=precision,  # type: ignore[arg-type]
            max_steps=steps + WARMUP,
            limit_val_batches=0,
            num_sanity_val_steps=0,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            callbacks=[timer],
        )
        trainer.fit(model, datamodule=data)
    return timer.steps()[WARMUP:]


def step_seconds(model: L.LightningModule, data: L.LightningDataModule, precision: str, steps: int) -> float:
    """The median wall time of a training step (`step_times`)."""
    return statistics.median(step_times(model, data, precision, steps))


@contextlib.contextmanager
def quiet_trainers() -> Iterator[None]:
    """Lightning's notices for each Trainer (precision, devices) and its warnings stay out of the run's output."""
    lightning_logger = logging.getLogger("lightning.pytorch")
    level = lightning_logger.level
    lightning_logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), silenced():
            warnings.simplefilter("ignore")
            yield
    finally:
        lightning_logger.setLevel(level)


def bf16_speedup(model: L.LightningModule, data: L.LightningDataModule) -> float:
    """fp32 step time / bf16-mixed step time of `model` training on `data` (above 1: bf16 is faster): medians
    of the steps of ROUNDS alternated rounds of about TIMED_SECONDS each (a short step is timed more often;
    batches of other lengths reach their steady speed once each length has been seen, which takes more than
    a few steps), on copies of the model, every random number generator restored after."""
    times: dict[str, list[float]] = {"32-true": [], "bf16-mixed": []}
    with random_state_kept(), quiet_trainers():
        first = step_times(copy.deepcopy(model), data, "32-true", MIN_STEPS)  # also sets the data up, untimed
        steps = max(MIN_STEPS, min(MAX_STEPS, round(TIMED_SECONDS / statistics.median(first))))
        for _ in range(ROUNDS):
            for precision, measured in times.items():
                measured += step_times(copy.deepcopy(model), data, precision, steps)
    return statistics.median(times["32-true"]) / statistics.median(times["bf16-mixed"])


def ctrl_c_kept(measure: Callable[..., float], *args: Any) -> float:
    """`measure(*args)`, with a Ctrl-C in it a KeyboardInterrupt again, as anywhere else before training: a
    Trainer turns one into exit(1), having set Ctrl-C to be ignored from then on."""
    handler = signal.getsignal(signal.SIGINT)
    try:
        return measure(*args)
    except SystemExit as stop:
        if not isinstance(stop.__context__, KeyboardInterrupt):
            raise
        signal.signal(signal.SIGINT, handler)
        raise KeyboardInterrupt from None


def worth_measuring(trainer: Any) -> bool:
    """Whether the run trains long enough to repay a measurement of seconds: not when its step limits
    (`max_steps`, or `max_epochs` x an integer `limit_train_batches`) come to fewer than MIN_RUN_STEPS."""
    limits = []
    if isinstance(trainer.max_steps, int) and trainer.max_steps > 0:
        limits.append(trainer.max_steps)
    if isinstance(trainer.limit_train_batches, int) and isinstance(trainer.max_epochs, int) and trainer.max_epochs > 0:
        limits.append(trainer.limit_train_batches * trainer.max_epochs)
    return not limits or min(limits) >= MIN_RUN_STEPS


def network_key(model: L.LightningModule, data: L.LightningDataModule) -> str:
    """What a step's speed depends on: the machine, torch, the network and its size, the data and its batch."""
    net = getattr(model, "net", model)
    size = sum(p.numel() for p in net.parameters() if not isinstance(p, nn.parameter.UninitializedParameter))
    batch = getattr(data, "batch_size", None) or getattr(data, "hparams", {}).get("batch_size")
    return (
        f"{cpu_name()}|{os.cpu_count()} cores|{torch.get_num_threads()} threads|torch {torch.__version__}|"
        f"{type(net).__module__}.{type(net).__qualname__}|{size} parameters|"
        f"{type(data).__module__}.{type(data).__qualname__}|batch {batch}"
    )


def measured_speedup(model: L.LightningModule, data: L.LightningDataModule, measure: bool = True) -> float | None:
    """bf16-mixed's speed-up for this model on this data on this CPU: cached, or measured now and cached
    (0.0: a layer cannot run in bf16 here). None where it is not measured: not cached and not `measure`d
    (a run too short to repay the measurement), a model or data not firstlight's
    (their training code is not run before the run), or a measurement that failed (the run then meets the
    same fault, and reports it as its own)."""
    from datamodules.base import DataModule
    from modules.task import TaskModule

    if not isinstance(model, TaskModule) or not isinstance(data, DataModule):
        return None
    key = network_key(model, data)
    path = cache_file()
    cached: dict[str, float] = {}
    with contextlib.suppress(OSError, ValueError, TypeError):
        cached = dict(json.loads(path.read_text()))
    if isinstance(cached.get(key), int | float):
        return float(cached[key])
    if not measure:
        return None
    try:
        speedup = ctrl_c_kept(bf16_speedup, model, data)
    except RuntimeError as error:
        if "bf16" not in str(error).lower() and "bfloat16" not in str(error).lower():
            return None
        speedup = 0.0  # torch has no bf16 kernel for a layer on this CPU
    except Exception:
        return None
    cached[key] = round(speedup, 3)
    with contextlib.suppress(OSError):  # a read-only home: measured again next time
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        temporary.write_text(json.dumps(cached, indent=1, sort_keys=True) + "\n")
        temporary.replace(path)
    return speedup


def network_choice(speedup: float | None, model: L.LightningModule, machine: PrecisionChoice) -> PrecisionChoice:
    """bf16-mixed where it trains `model` at least MARGIN faster than 32-true, else 32-true; the reason says so.
    Not measured (None): the `machine`'s choice."""
    name, cpu = type(getattr(model, "net", model)).__name__, cpu_name()
    if speedup is None:  # not measured: the machine's choice
        return machine
    if speedup >= MARGIN:
        return PrecisionChoice("bf16-mixed", f"this CPU, {cpu}, has native bf16: {name} trains x{speedup:.2f} faster")
    measured = f"x{speedup:.2f} as fast" if speedup > 0 else "unsupported"
    return PrecisionChoice("32-true", f"this CPU, {cpu}, has native bf16, but {name} trains in bf16-mixed {measured}")
