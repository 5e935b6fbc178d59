"""Channels-last vs the default (NCHW) memory layout for the Fashion-MNIST CNN, side by side.

    python -m benchmarks.channels_last [--steps 8] [--repeats 3]

The preset's CNN (channels 16-32-64, hidden 128) and the former one (32-64, hidden 256), batches of 256
random 28x28 images, training steps (forward, cross-entropy, backward, AdamW) in float32 and in bf16
autocast, each layout alternated `--repeats` times; median time per step, and what it makes of an epoch
of 54,000 images. Set by `CNNClassifier(channels_last=...)` (`--model.net.channels_last`), on by default.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
from torch import nn

from cores.cnn import CNNClassifier
from experiments.hardware import machine_summary

BATCH = 256
NETWORKS = {"16-32-64": ((16, 32, 64), 128), "32-64": ((32, 64), 256)}


def time_steps(model: nn.Module, x: torch.Tensor, y: torch.Tensor, logits: Callable, bf16: bool, steps: int) -> float:
    """Median seconds of a plain training step (forward, cross-entropy, backward, AdamW) of `model`."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    durations = []
    for _ in range(steps + 2):  # two warm-up steps
        started = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = nn.functional.cross_entropy(logits(model, x).float(), y)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        durations.append(time.perf_counter() - started)
    return statistics.median(durations[2:])


def step_seconds(channels: tuple[int, ...], hidden: int, channels_last: bool, bf16: bool, steps: int) -> float:
    """The core alone: the task around it adds no parameters or arithmetic to a step."""
    torch.manual_seed(0)
    model = CNNClassifier(channels=channels, hidden_dim=hidden, channels_last=channels_last).train()
    images, labels = torch.randn(BATCH, 1, 28, 28), torch.randint(0, 10, (BATCH,))
    return time_steps(model, images, labels, lambda model, x: model(x), bf16, steps)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(machine_summary())  # the figures below hold for this hardware
    print(f"CPU, {torch.get_num_threads()} threads, batch {BATCH}; median ms per training step (s per 54k epoch)")
    for name, (channels, hidden) in NETWORKS.items():
        for bf16 in (False, True):
            medians: dict[bool, list[float]] = {False: [], True: []}
            for _ in range(args.repeats):
                for layout in (False, True):
                    medians[layout].append(step_seconds(channels, hidden, layout, bf16, args.steps))
            nchw, nhwc = (statistics.median(medians[layout]) for layout in (False, True))
            epoch = 54_000 / BATCH
            precision = "bf16" if bf16 else "fp32"
            print(
                f"{name:9s} {precision}  NCHW {nchw * 1e3:7.1f} ms ({nchw * epoch:5.1f} s)"
                f"  channels-last {nhwc * 1e3:7.1f} ms ({nhwc * epoch:5.1f} s)  x{nchw / nhwc:.2f}"
            )


if __name__ == "__main__":
    main()
