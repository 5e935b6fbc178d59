"""Training throughput and model FLOPs utilisation (MFU) on one device, data already resident on it.

    python -m benchmarks.gpu                  # on a GPU: the full sizes below
    python -m benchmarks.gpu --size tiny      # anywhere; the test suite runs it on the CPU

- Transformer language model (the core `TransformerLanguageModel`, decoder-only, in `LanguageModelTask`):
  full size 12 layers, width 768, 12 heads, vocabulary 32,768, sequences of 1,024 tokens (about 110M
  parameters), batch 16, bf16 autocast, AdamW; eager and with `torch.compile` (the core compiled in place,
  as `--model.compile true` does).
- CNN (the core `CNNClassifier` in `ClassificationTask`): 3x32x32 images, stages of 64-128-256 channels,
  batch 512; float32 vs bf16 autocast, each with the default (NCHW) and the channels-last memory layout.

Each variant runs `--warmup` untimed steps (compilation happens there), then `--steps` timed ones, the
device synchronised at both ends. A step is the module's training step (forward, loss, metrics),
backward and the optimizer step. Inputs are random tokens and images generated on the device: their
values do not change the work. FLOPs per step are counted once per model with torch's FlopCounterMode
(eager; compiling does not change the arithmetic); MFU = achieved FLOP/s / the device's dense bf16 or
fp32 peak (known for GPUs; `--peak-tflops` for others).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from callbacks.throughput import peak_flops
from cores.cnn import CNNClassifier
from cores.transformer import TransformerLanguageModel
from experiments.hardware import machine_summary
from modules.classification import ClassificationTask
from modules.language_model import LanguageModelTask
from modules.task import TaskModule


@dataclass(frozen=True)
class Size:
    lm: dict[str, Any]
    lm_batch: int
    seq_len: int
    cnn_channels: tuple[int, ...]
    cnn_batch: int


SIZES = {
    "full": Size(
        lm={"vocab_size": 32768, "dim": 768, "num_layers": 12, "num_heads": 12, "max_length": 1024},
        lm_batch=16,
        seq_len=1024,
        cnn_channels=(64, 128, 256),
        cnn_batch=512,
    ),
    "tiny": Size(
        lm={"vocab_size": 256, "dim": 64, "num_layers": 2, "num_heads": 4, "max_length": 64},
        lm_batch=4,
        seq_len=64,
        cnn_channels=(8, 16),
        cnn_batch=16,
    ),
}


@dataclass
class Result:
    name: str
    seconds_per_step: float
    items_per_step: int
    unit: str
    flops_per_step: float
    peak: float | None

    def line(self) -> str:
        rate = self.items_per_step / self.seconds_per_step
        tflops = self.flops_per_step / self.seconds_per_step / 1e12
        mfu = f"{tflops * 1e12 / self.peak:6.1%}" if self.peak else "   n/a"
        step = f"{self.seconds_per_step * 1e3:9.2f} ms/step"
        return f"{self.name:34s} {step} {rate:13,.0f} {self.unit}/s {tflops:9.4f} TFLOP/s  MFU {mfu}"


def training_step(model: TaskModule, batch: Any, dtype: torch.dtype) -> Callable[[], None]:
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    device_type = batch[0].device.type
    autocast = torch.autocast(device_type, dtype=dtype) if dtype != torch.float32 else nullcontext()

    def step() -> None:
        with autocast:
            loss = model.training_step(batch, 0)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def count_flops(step: Callable[[], None]) -> float:
    counter = FlopCounterMode(display=False)
    with counter:
        step()
    return float(counter.get_total_flops())


def seconds_per_step(step: Callable[[], None], device: torch.device, warmup: int, steps: int) -> float:
    for _ in range(warmup):
        step()
    synchronize(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    synchronize(device)
    return (time.perf_counter() - start) / steps


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def language_model(size: Size, device: torch.device, compiled: bool, args: argparse.Namespace) -> Result:
    torch.manual_seed(0)
    model = LanguageModelTask(TransformerLanguageModel(**size.lm, dropout=0.0)).to(device).train()
    tokens = torch.randint(1, size.lm["vocab_size"], (size.lm_batch, size.seq_len + 1), device=device)
    batch = (tokens[:, :-1], tokens[:, 1:])
    step = training_step(model, batch, torch.bfloat16)
    flops = count_flops(step)
    if compiled:
        model.net.compile()
    seconds = seconds_per_step(step, device, args.warmup, args.steps)
    name = f"Transformer LM {sum(p.numel() for p in model.parameters()) / 1e6:.1f}M bf16" + (
        " compiled" if compiled else " eager"
    )
    return Result(name, seconds, size.lm_batch * size.seq_len, "tokens", flops, peak(device, torch.bfloat16, args))


def cnn(size: Size, device: torch.device, dtype: torch.dtype, channels_last: bool, args: argparse.Namespace) -> Result:
    torch.manual_seed(0)
    net = CNNClassifier(
        image_shape=(3, 32, 32), num_classes=10, channels=size.cnn_channels, hidden_dim=256, channels_last=channels_last
    )
    model = ClassificationTask(net, num_classes=10)
    layout = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(device).train()
    images = torch.randn(size.cnn_batch, 3, 32, 32, device=device).contiguous(memory_format=layout)
    batch = (images, torch.randint(0, 10, (size.cnn_batch,), device=device))
    step = training_step(model, batch, dtype)
    flops = count_flops(step)
    seconds = seconds_per_step(step, device, args.warmup, args.steps)
    name = f"CNN {'bf16' if dtype == torch.bfloat16 else 'fp32'} {'channels-last' if channels_last else 'NCHW'}"
    return Result(name, seconds, size.cnn_batch, "images", flops, peak(device, dtype, args))


def peak(device: torch.device, dtype: torch.dtype, args: argparse.Namespace) -> float | None:
    return args.peak_tflops * 1e12 if args.peak_tflops else peak_flops(device, dtype)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", choices=sorted(SIZES), default="full")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--peak-tflops", type=float, default=None, help="the device's peak, if not known")
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile variant")
    args = parser.parse_args()
    print(machine_summary())  # the figures below hold for this hardware
    device, size = torch.device(args.device), SIZES[args.size]
    torch.set_float32_matmul_precision("high")  # fp32 matmuls on tensor cores (TF32), as Lightning suggests
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({torch.get_num_threads()} threads)"
    print(f"{where}, size {args.size}, {args.steps} timed steps after {args.warmup}")
    results = [language_model(size, device, False, args)]
    if not args.no_compile:
        results.append(language_model(size, device, True, args))
    for dtype in (torch.float32, torch.bfloat16):
        for channels_last in (False, True):
            results.append(cnn(size, device, dtype, channels_last, args))
    for result in results:
        print(result.line(), flush=True)


if __name__ == "__main__":
    main()
