"""What this machine can do, read at run time, and the training precision that suits it.

Machines of the same kind differ: some x86 CPUs have native bf16 (AVX512-BF16, AMX), where bf16 mixed
precision trains the presets' networks up to 1.5-1.8x faster than fp32; others (AVX2 only) emulate it
3-11x slower, and oneDNN cannot run an LSTM in bf16 there at all. `--trainer.precision auto` (every
preset's default) picks from what the machine reports, never from the machine the presets were written on.

To see the path of a CPU without native bf16 on one that has it, cap oneDNN's instruction set:
`ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2` (the probe below then reports no bf16, and the kernels
are the AVX2 ones).
"""

from __future__ import annotations

import functools
import os
import platform
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from validation import ConfigError

AUTO = "auto"
BF16 = ("bf16-mixed", "bf16-true", "bf16")
# How much slower bf16-mixed trains than 32-true on a CPU without native bf16, per step of the presets'
# networks (`python -m benchmarks.precision`): x0.09-x0.25 with oneDNN capped at AVX2 on an AMD EPYC,
# x0.18-x0.30 on an AMD EPYC with AVX2 only.
EMULATED_BF16_SLOWDOWN = "3-11x"


@functools.cache
def cpu_name() -> str:
    """The CPU's model name as the OS reports it ("AMD EPYC", "Apple M2", ...)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                key, _, value = line.partition(":")
                if key.strip() in ("model name", "Hardware", "Model") and value.strip():
                    return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


@functools.cache
def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 natively (x86: AVX512-BF16 or AMX; ARM: the BF16 extension), by
    oneDNN's own check, which honours ONEDNN_MAX_CPU_ISA."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a torch build without oneDNN
        return False


def machine_summary() -> str:
    """One line naming the hardware a figure was measured on: the CPU, its bf16, threads, and any GPU."""
    bf16 = "native bf16" if cpu_has_native_bf16() else "no native bf16"
    threads = torch.get_num_threads()
    line = f"CPU: {cpu_name()} ({platform.machine()}, {os.cpu_count()} cores, {bf16}), {threads} threads"
    if torch.cuda.is_available():
        line += f"; GPU: {torch.cuda.get_device_name()}"
    return line


def device_kind(accelerator: Any) -> str:
    """Where a Trainer with this `accelerator` setting (a name, or a class path) trains: cpu, cuda or mps."""
    name = str(accelerator).lower()
    if name == AUTO:
        if torch.cuda.is_available():
            return "cuda"
        return "mps" if torch.backends.mps.is_available() else "cpu"
    if "cuda" in name or "gpu" in name:
        return "cuda"
    return "mps" if "mps" in name else "cpu"


@dataclass(frozen=True)
class PrecisionChoice:
    precision: str
    reason: str

    def __str__(self) -> str:
        return f"precision: {self.precision} ({self.reason})"


def choose_precision(device: str, native_bf16: bool) -> PrecisionChoice:
    """`--trainer.precision auto` on `device` ("cpu", "cuda", "mps"), given whether it computes bf16 natively.

    On CPUs with native bf16, bf16-mixed pays off for most networks (x1.1-x1.6 per training step, `python -m
    benchmarks.precision`), and a run then keeps it only for a network measured faster in it
    (experiments/precision_probe.py); without native bf16, bf16 is emulated and 3-11x slower, or impossible
    (LSTMs). GPUs without bf16 (before Ampere) get fp16 with loss scaling.
    """
    if device == "cuda":
        if native_bf16:
            return PrecisionChoice("bf16-mixed", "this GPU supports bf16")
        return PrecisionChoice("16-mixed", "this GPU has no bf16: fp16 with loss scaling")
    if device == "mps":
        return PrecisionChoice("32-true", "mixed precision is not measured on Apple GPUs")
    if native_bf16:
        return PrecisionChoice("bf16-mixed", f"this CPU, {cpu_name()}, has native bf16")
    return PrecisionChoice("32-true", f"this CPU, {cpu_name()}, has no native bf16")


def resolve_precision(precision: Any, accelerator: Any) -> PrecisionChoice | None:
    """The choice `auto` makes for this machine; None when a precision was given (it is used as given)."""
    if precision not in (None, AUTO):
        return None
    device = device_kind(accelerator)
    native = torch.cuda.is_bf16_supported() if device == "cuda" else device == "cpu" and cpu_has_native_bf16()
    return choose_precision(device, native)


def check_bf16_on_cpu(precision: Any, accelerator: Any, model: nn.Module) -> str | None:
    """For a bf16 precision on a CPU without native bf16: raise ConfigError if a layer of `model` cannot run
    in bf16 here (oneDNN's LSTM), else return a warning giving the expected slowdown. None otherwise."""
    if str(precision) not in BF16 or device_kind(accelerator) != "cpu" or cpu_has_native_bf16():
        return None
    for layer in model.modules():
        if isinstance(layer, nn.RNNBase) and not runs_in_bf16(layer):
            name = type(layer).__name__
            raise ConfigError(
                f"this CPU ({cpu_name()}, no native bf16) cannot run an {name} in {precision}; "
                "use --trainer.precision 32-true (or auto, which chooses it here)"
            )
    return (
        f"warning: {precision} on this CPU ({cpu_name()}, no native bf16) is emulated and trains "
        f"{EMULATED_BF16_SLOWDOWN} slower than 32-true; --trainer.precision auto chooses 32-true here"
    )


def runs_in_bf16(layer: nn.RNNBase) -> bool:
    """Whether torch runs this recurrent layer forward under CPU bf16 autocast on this machine."""
    try:
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            layer(torch.zeros(1, 2, layer.input_size))
    except RuntimeError:  # "could not create a primitive descriptor for the LSTM forward propagation primitive"
        return False
    return True
