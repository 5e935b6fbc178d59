"""`--trainer.precision auto` per network on a CPU with native bf16: bf16-mixed only where it is measured faster.

Native bf16 makes most networks train faster in bf16-mixed (up to x1.8 in total, `python -m benchmarks.precision`),
but not all: on a 2-core AMD EPYC the ViT trains x0.55 as fast, and some networks are faster in bf16 on most
batches but twice as slow on a few shapes. Which ones depends on the CPU, the threads, the network and its
batches, so it is measured on this machine before the run trains: real training steps of a copy of the run's
model on the run's data, by one Trainer that keeps nothing and switches the precision between blocks of
steps, each chunk of batches trained once in each, with every random number generator restored afterwards:
the run trains exactly as it would without the measurement. The figure is the ratio of the steps' total
times (as a run takes them; the fetching of batches, the same in both, aside) over rounds of a block of each;
a 90% interval over the rounds says how sure it is, and while it cannot tell whether bf16-mixed is MARGIN
faster, more rounds are timed (within about MEASURE_SECONDS). bf16-mixed is kept where it is at least MARGIN
faster; else 32-true, which is exact. The answer is cached per CPU, torch version, threads, network, data
and batch size in `~/.cache/firstlight/precision.json` (`$XDG_CACHE_HOME`): each is measured once per
machine, in seconds, by the first run that trains at least MIN_RUN_STEPS steps (its max_steps, or its epochs
of the data's batches; a shorter one uses the cache, or the machine's choice). Only firstlight's tasks on
firstlight's datamodules are measured (a user's own LightningModule gets the machine's choice), and only
single-process runs (ranks measuring apart could disagree).
"""

from __future__ import annotations

import contextlib
import copy
import itertools
import json
import math
import os
import random
import signal
import statistics
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.plugins.precision import MixedPrecision
from torch import nn

from datamodules.cache import firstlight_cache
from experiments.hardware import PrecisionChoice, cpu_name
from experiments.message_filters import muted

MARGIN = 1.02  # bf16-mixed must be at least 2% faster to be kept: else 32-true, which is exact
WARMUP = 2  # untimed steps per Trainer, and after each switch of precision
MIN_STEPS, MAX_STEPS, TIMED_SECONDS = 8, 256, 1.0  # timed steps per block: about 1 s of them
CHUNKS = 3  # chunks of batches the rounds train in turn; the first CHUNKS rounds are not counted
ROUNDS, MAX_ROUNDS, MEASURE_SECONDS = 4, 16, 30.0  # rounds of a block of each; more while unclear, within 30 s
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


def train_briefly(model: L.LightningModule, data: L.LightningDataModule, steps: int, **trainer: Any) -> None:
    """`steps` training steps of `model` on `data` by a Trainer of its own on the CPU that keeps nothing (no
    logger, checkpoint or validation), with the `trainer` options given (precision or plugins, callbacks)."""
    with tempfile.TemporaryDirectory() as scratch:  # what a datamodule saves (a tokenizer.json) goes nowhere
        L.Trainer(
            default_root_dir=scratch,
            accelerator="cpu",
            devices=1,
            max_steps=steps,
            limit_val_batches=0,
            num_sanity_val_steps=0,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            **trainer,
        ).fit(model, datamodule=data)


def step_times(model: L.LightningModule, data: L.LightningDataModule, steps: int, precision: str) -> list[float]:
    """The wall times of the first `steps` training batches of `model` on `data` in `precision`, after WARMUP
    untimed ones, by a Trainer of its own (`train_briefly`). Every Trainer sees the same batches: an epoch's
    order is drawn from the data's seed and the epoch."""
    timer = StepTimes()
    train_briefly(model, data, steps + WARMUP, precision=precision, callbacks=[timer])
    return [end - start for start, end in zip(timer.starts, timer.starts[1:], strict=False)][WARMUP:]


def quiet_trainers() -> contextlib.AbstractContextManager[None]:
    """Lightning's notices for each Trainer (precision, devices) and its warnings stay out of the run's output."""
    return muted("lightning.pytorch")


def timed_steps(model: L.LightningModule, data: L.LightningDataModule, seconds: float | None = None) -> int:
    """How many of the model's training steps take about `seconds` (TIMED_SECONDS; MIN_STEPS to MAX_STEPS),
    timed in a first round that also sets the data up (on a copy, every random number generator restored)."""
    with random_state_kept(), quiet_trainers():
        first = step_times(copy.deepcopy(model), data, 4, "32-true")
    return max(MIN_STEPS, min(MAX_STEPS, round((seconds or TIMED_SECONDS) / statistics.median(first))))


class SwitchedAutocast(MixedPrecision):
    """bf16-mixed's autocast around the forward passes while `bf16` is set, none otherwise (32-true): one
    Trainer trains in either precision, switched between steps. Nothing else differs between the two."""

    def __init__(self) -> None:
        super().__init__("bf16-mixed", "cpu")
        self.bf16 = False

    @contextlib.contextmanager
    def forward_context(self) -> Iterator[None]:
        with self.autocast_context_manager() if self.bf16 else contextlib.nullcontext():
            yield


class ChunksTwice:
    """The first CHUNKS runs of `chunk` batches of `loader` (its epochs again where it has fewer), each given
    twice in a row, in turn, round after round: the two blocks of a round train on the same batches (a step's
    time depends on its batch's shape), and later rounds come back to the same shapes, as a run's epochs do,
    so that what a shape costs the first time it is met in each precision is paid in the first CHUNKS rounds,
    which are not counted. CHUNKS is odd: each chunk goes first in both precisions."""

    def __init__(self, loader: Iterable[Any], chunk: int) -> None:
        self.loader, self.chunk = loader, chunk

    def pool(self) -> list[list[Any]]:
        batches: list[Any] = []
        while len(batches) < CHUNKS * self.chunk:
            before = len(batches)
            batches += itertools.islice(self.loader, CHUNKS * self.chunk - before)
            if len(batches) == before:  # no batches at all
                return []
        return [batches[start : start + self.chunk] for start in range(0, len(batches), self.chunk)]

    def __iter__(self) -> Iterator[Any]:
        for chunk in itertools.cycle(self.pool()):
            yield from chunk
            yield from chunk


@contextlib.contextmanager
def chunks_twice(data: L.LightningDataModule, chunk: int) -> Iterator[None]:
    """`data`'s training batches as `ChunksTwice` gives them, within the block."""
    loader = data.train_dataloader
    data.train_dataloader = lambda: ChunksTwice(loader(), chunk)  # type: ignore[method-assign]
    try:
        yield
    finally:
        del data.train_dataloader


# two-sided 90% quantiles of Student's t by degrees of freedom (1-9; 1.645 beyond): a table, as scipy is only
# in the audio extra and the probe runs on the core install
T90 = (6.314, 2.920, 2.353, 2.132, 2.015, 1.943, 1.895, 1.860, 1.833)

Round = tuple[float, float]  # seconds of a round's fp32 steps, seconds of the same steps in bf16-mixed
Rounds = list[Round]


def speedup_of(rounds: Rounds) -> tuple[float, tuple[float, float]]:
    """fp32 time / bf16-mixed time over all the `rounds` (the ratio of the totals, as a run takes them: a mean
    of the rounds' own ratios would weigh a round of short sequences as much as one of long ones, whose ratios
    differ), and its 90% interval (the ratio estimator's: Student's t on the rounds' residuals, fp32 - ratio x
    bf16). It is the rounds that say how sure it is: the machine's speed drifts from one to the next."""
    fp32, bf16 = (sum(seconds) for seconds in zip(*rounds, strict=True))
    ratio = fp32 / bf16
    if len(rounds) < 2:
        return ratio, (0.0, math.inf)
    residuals = [f - ratio * b for f, b in rounds]
    error = statistics.stdev(residuals) / math.sqrt(len(rounds)) / (bf16 / len(rounds))
    t = T90[len(rounds) - 2] if len(rounds) - 2 < len(T90) else 1.645
    return ratio, (max(0.0, ratio - t * error), ratio + t * error)


def measured_enough(rounds: Rounds, spent: float, last_round: float, most: int, until_clear: bool) -> bool:
    """Whether to stop after these `rounds`: `most` of them, or, `until_clear`, from ROUNDS on, once the interval
    of their `speedup_of` lies on one side of MARGIN, or before a round (as long as the `last_round`) would take
    the measurement past MEASURE_SECONDS (`spent` so far)."""
    if len(rounds) >= most:
        return True
    if not until_clear or len(rounds) < ROUNDS:
        return False
    _, (low, high) = speedup_of(rounds)
    return low >= MARGIN or high < MARGIN or spent + last_round > MEASURE_SECONDS


class AlternatingBlocks(L.Callback):
    """Switches `autocast` between blocks of WARMUP + `timed` steps, a round being one block of each precision
    on the same batches (`ChunksTwice`), which goes first alternating (32-true, bf16, bf16, 32-true, ...). It
    times the `timed` steps of each block (the first WARMUP after a switch are not), from the start of the
    batch to its end (the fetching, the same in both, is not the network's), keeps each round's seconds in
    `rounds` (but for the first CHUNKS), and stops the Trainer once `measured_enough`, at most `most` rounds."""

    def __init__(self, autocast: SwitchedAutocast, timed: int, most: int, until_clear: bool) -> None:
        self.autocast, self.most, self.until_clear = autocast, most, until_clear
        self.block = WARMUP + timed
        self.step, self.began = 0, 0.0
        self.seconds = {False: 0.0, True: 0.0}  # of the round's timed steps, by bf16
        self.rounds: Rounds = []
        self.started = self.round_began = time.perf_counter()

    def in_bf16(self, step: int) -> bool:
        round_, second = divmod(step // self.block, 2)
        return (round_ % 2 == 1) != (second == 1)

    def on_train_batch_start(self, *args: Any) -> None:
        self.autocast.bf16 = self.in_bf16(self.step)
        self.began = time.perf_counter()

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        if self.step % self.block >= WARMUP:
            self.seconds[self.autocast.bf16] += time.perf_counter() - self.began
        self.step += 1
        if self.step % (2 * self.block):
            return
        if self.step > 2 * self.block * CHUNKS:  # the first CHUNKS rounds pay for each shape's first time
            self.rounds.append((self.seconds[False], self.seconds[True]))
        self.seconds = {False: 0.0, True: 0.0}
        now = time.perf_counter()
        last_round, self.round_began = now - self.round_began, now
        if measured_enough(self.rounds, now - self.started, last_round, self.most, self.until_clear):
            trainer.should_stop = True


def bf16_speedup_within(
    model: L.LightningModule, data: L.LightningDataModule, timed: int, most: int, until_clear: bool = True
) -> tuple[float, tuple[float, float]]:
    """fp32 time / bf16-mixed time of `model` training on `data` (above 1: bf16 is faster) and its interval, by
    `speedup_of` up to `most` rounds of `AlternatingBlocks` of `timed` steps: one Trainer on a copy of the model,
    every random number generator restored after. Within one Trainer, as both precisions train on the same
    batches moments apart, the machine's drift cancels: whole Trainers of each precision differ by 10% from
    one pair to the next on a shared 2-core machine, blocks by 1-4%. Blocks, not single steps: a step just
    after a switch is slower (an LSTM's bf16 steps by a third), so the first WARMUP are not timed."""
    autocast = SwitchedAutocast()
    blocks = AlternatingBlocks(autocast, timed, most, until_clear)
    steps = 2 * (CHUNKS + most) * blocks.block
    with random_state_kept(), quiet_trainers(), chunks_twice(data, blocks.block):
        train_briefly(copy.deepcopy(model), data, steps, plugins=[autocast], callbacks=[blocks])
    return speedup_of(blocks.rounds)


class RunTooShort(Exception):
    """The run trains fewer than MIN_RUN_STEPS steps, known once its data is set up: not worth measuring."""


def bf16_speedup(model: L.LightningModule, data: L.LightningDataModule, epochs: int | None = None) -> float:
    """`bf16_speedup_within` blocks of about TIMED_SECONDS of steps: ROUNDS rounds, more until it is clear.
    RunTooShort, after the first timing (which sets the data up), when `epochs` of its batches are too few."""
    timed = timed_steps(model, data)
    if too_short(data, epochs):
        raise RunTooShort
    return bf16_speedup_within(model, data, timed, MAX_ROUNDS)[0]


def too_short(data: L.LightningDataModule, epochs: int | None) -> bool:
    """Whether `epochs` of the data's training batches come to fewer than MIN_RUN_STEPS steps (a length the
    loader cannot tell, a stream's, is not too short)."""
    if not isinstance(epochs, int) or epochs <= 0:
        return False
    try:
        batches = len(data.train_dataloader())
    except TypeError:
        return False
    return batches * epochs < MIN_RUN_STEPS


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


def measured_speedup(
    model: L.LightningModule, data: L.LightningDataModule, measure: bool = True, epochs: int | None = None
) -> float | None:
    """bf16-mixed's speed-up for this model on this data on this CPU: cached, or measured now and cached
    (0.0: a layer cannot run in bf16 here). None where it is not measured: not cached and not `measure`d, or
    `epochs` of the data too few steps (a run too short to repay the measurement), a model or data not firstlight's
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
        speedup = ctrl_c_kept(bf16_speedup, model, data, epochs)
    except RunTooShort:  # `epochs` of this data: too few steps to repay the measurement
        return None
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
