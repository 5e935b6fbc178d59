"""Where the time of a training step goes, firstlight's next to a hand-written loop's, part by part.

    python -m benchmarks.overhead_breakdown [--steps 300]

The lean run of `benchmarks.overhead` (the digits CNN, batch 128, through Lightning's Trainer, each step
followed by a hand-written step) with a timestamp at each of Lightning's step hooks, at the start of
`training_step` and around the network's forward pass; the hand-written step is timed at the same
places. Printed: the median microseconds of each part for both loops and their difference. Lightning
calls the optimizer first and runs the forward and backward passes inside its closure, so the part
"optimizer call until training_step" holds Lightning's closure machinery and the start of
`optimizer.step` (its checks, which the hand-written loop pays in "optimizer step").
"""

from __future__ import annotations

import argparse
import itertools
import logging
import statistics
import time
from collections import defaultdict
from typing import Any

import lightning as L
import torch

from benchmarks.overhead import Interleaved, lean
from experiments.hardware import machine_summary

PARTS = (  # (firstlight's part: from the previous mark to this one, the hand-written loop's counterpart)
    ("after the step: hooks, scheduler, next batch, transfer", "scheduler step, next batch"),
    ("optimizer call until training_step", ""),
    ("network forward", "network forward"),
    ("loss, metrics, closure", "loss"),
    ("zero_grad", "zero_grad"),
    ("backward", "backward"),
    ("clipping hook", ""),
    ("optimizer step and batch-end hooks", "optimizer step"),
)


class Breakdown(Interleaved):
    """Interleaved, with both steps timed part by part: `self.parts[loop][part]` lists seconds per step."""

    def __init__(self, steps: int) -> None:
        super().__init__(steps)
        self.parts: dict[str, dict[str, list[float]]] = {"firstlight": defaultdict(list), "hand": defaultdict(list)}
        self.marks: list[float] = []

    def mark(self, *args: Any) -> None:
        self.marks.append(time.perf_counter())

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        training_step = pl_module.training_step

        def marked_training_step(*args: Any, **kwargs: Any) -> Any:
            self.mark()
            return training_step(*args, **kwargs)

        pl_module.training_step = marked_training_step  # type: ignore[method-assign]
        pl_module.net.register_forward_hook(self.mark)  # type: ignore[union-attr]

    on_train_batch_start = on_before_zero_grad = on_before_backward = on_after_backward = mark  # type: ignore[assignment]
    on_before_optimizer_step = mark  # type: ignore[assignment]

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        # Marks, in the order of the hooks under automatic optimization: the previous hand-written step's
        # end, batch start, training_step, network forward end, before zero_grad, before backward, after
        # backward, before the optimizer step, batch end: one interval per part of PARTS.
        self.mark()
        if len(self.marks) == len(PARTS) + 1:
            for (name, _), (a, b) in zip(PARTS, itertools.pairwise(self.marks), strict=True):
                self.parts["firstlight"][name].append(b - a)
        self.hand_step()
        self.marks = [time.perf_counter()]

    def hand_step(self) -> None:
        """HandWrittenLoop.step, timed at each part (the scheduler's step counts with loading the batch,
        as Lightning steps it between batches)."""
        times = [time.perf_counter()]
        with torch.enable_grad():
            self.hand.step(lambda: times.append(time.perf_counter()))
        seconds = [b - a for a, b in itertools.pairwise(times)]
        seconds[0] += seconds.pop()  # the scheduler's step, with the next batch
        names = ["scheduler step, next batch", "network forward", "loss", "zero_grad", "backward", "optimizer step"]
        for name, value in zip(names, seconds, strict=True):
            self.parts["hand"][name].append(value)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=300)
    args = parser.parse_args()
    print(machine_summary())  # the figures below hold for this hardware
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    breakdown = Breakdown(args.steps)
    lean(args.steps, breakdown)  # the lean run of benchmarks.overhead, timed part by part

    def median_us(loop: str, part: str) -> float:
        values = breakdown.parts[loop].get(part, [])[10:]  # past the first steps' warm-up
        return statistics.median(values) * 1e6 if values else 0.0

    print(f"{'firstlight part':58s} {'us':>7s}   {'hand-written part':28s} {'us':>7s}  {'difference':>10s}")
    totals = [0.0, 0.0]
    for ours, theirs in PARTS:
        a, b = median_us("firstlight", ours), median_us("hand", theirs)
        totals[0], totals[1] = totals[0] + a, totals[1] + b
        print(f"{ours:58s} {a:7.0f}   {theirs or '-':28s} {b:7.0f}  {a - b:+10.0f}")
    ours_total, hand_total = totals
    total = "step (sum of the medians)"
    print(f"{total:58s} {ours_total:7.0f}   {'':28s} {hand_total:7.0f}  {ours_total - hand_total:+10.0f}")


if __name__ == "__main__":
    main()
