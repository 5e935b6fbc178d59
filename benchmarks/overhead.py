"""What firstlight costs over a hand-written PyTorch loop: the same CNN, data and batch size, side by side.

    python -m benchmarks.overhead [--steps 300] [--repeats 3]

The digits CNN (channels 32-64, hidden 128, NCHW layout like the hand-written loop) on the 1,294
training digits in batches of 128, AdamW with the preset's cosine schedule, trained by firstlight two
ways, alternated `--repeats` times in this one process:

- lean: `ClassificationTask` around the core `CNNClassifier`, and `ImageDataModule`, through Lightning's
  Trainer without logger, progress bar or checkpoints;
- default: `python -m experiments.run --config cnn_digits` as users run it (W&B offline, checkpoints,
  the logging callbacks, history.jsonl, logging every 5 steps), validation switched off so that only
  training steps compare, and in 32-true like the hand-written loop (not the precision `auto` picks).

Each firstlight step is paired with a step of a hand-written loop (index a batch of the uint8 tensors,
normalise, forward, cross-entropy, backward, optimizer and scheduler step; its own copy of the model),
run right after it from a callback. Interleaving step by step puts both under the same conditions: on a
shared 2-core machine, the speed of whole runs drifts by 10-20% from one minute to the next, more than the
overhead being measured. A firstlight step is the time from the end of one hand-written step to the next
batch's end (loading, transfer, step, every hook and logger; the hand-written step excluded).

Printed per variant: median step of both and their ratio, and the ratio of the means (which counts the
steps that log or save as well), median over the repeats. The last line reads
`overhead default=<ratio> lean=<ratio>` (ratios of median steps to the hand-written loop's).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch import nn

from cores.cnn import CNNClassifier
from datamodules.image import ImageDataModule
from experiments.hardware import machine_summary
from experiments.run import main as run
from modules.classification import ClassificationTask
from modules.optim import build_optimizer, build_scheduler

BATCH = 128


def digits() -> ImageDataModule:
    data = ImageDataModule(dataset="digits", batch_size=BATCH)
    data.prepare_data()
    data.setup()
    return data


def model(data: ImageDataModule) -> ClassificationTask:
    """The digits CNN in its task; the hand-written loop trains a copy of the core (`.net`)."""
    torch.manual_seed(0)
    net = CNNClassifier(
        image_shape=data.image_shape,
        num_classes=data.num_classes,
        channels=(32, 64),
        hidden_dim=128,
        channels_last=False,  # the layout the hand-written loop uses
    )
    return ClassificationTask(net, num_classes=data.num_classes, lr=3e-3)


class HandWrittenLoop:
    """The training loop one would write by hand, one step at a time."""

    def __init__(self, steps: int) -> None:
        data = digits()
        classifier = model(data)
        self.net, (self.images, self.labels) = classifier.net, data.splits["train"]
        self.mean, self.std = data.mean, data.std
        c = classifier  # the optimizer and schedule that the module configures for itself under the Trainer
        self.optimizer = build_optimizer(c, c.optimizer_name, c.lr, c.weight_decay, c.momentum, c.nesterov, c.betas)
        scheduler = build_scheduler(self.optimizer, c.scheduler_name, steps, c.warmup_fraction)
        assert scheduler is not None
        self.scheduler = scheduler
        self.loss_fn = nn.CrossEntropyLoss()
        self.generator = torch.Generator().manual_seed(0)
        self.order, self.position = torch.randperm(len(self.labels), generator=self.generator), 0
        self.net.train()

    def step(self, mark: Callable[[], None] = lambda: None) -> None:
        """One step; `mark()` is called after each part (batch, forward, loss, zero_grad, backward,
        optimizer step, scheduler step), for benchmarks.overhead_breakdown's timings."""
        if self.position + BATCH > len(self.order):  # a new epoch, dropping the last partial batch
            self.order, self.position = torch.randperm(len(self.labels), generator=self.generator), 0
        index = self.order[self.position : self.position + BATCH]
        self.position += BATCH
        x = (self.images[index].float().div_(255) - self.mean) / self.std
        mark()
        logits = self.net(x)
        mark()
        loss = self.loss_fn(logits, self.labels[index])
        mark()
        self.optimizer.zero_grad(set_to_none=True)
        mark()
        loss.backward()
        mark()
        self.optimizer.step()
        mark()
        self.scheduler.step()
        mark()


class Interleaved(L.Callback):
    """After every training batch, runs one hand-written step; records both steps' seconds, written as
    JSON `{"firstlight": [...], "hand": [...]}` to `path` when fitting ends."""

    def __init__(self, steps: int, path: str = "") -> None:
        self.hand = self.hand_written_loop(steps)
        self.path = path
        self.times: dict[str, list[float]] = {"firstlight": [], "hand": []}
        self.resumed = 0.0  # when the last hand-written step ended and firstlight's work resumed

    def hand_written_loop(self, steps: int) -> Any:
        """The loop paired with firstlight's: anything with a `step()`."""
        return HandWrittenLoop(steps)

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        ended = time.perf_counter()
        with torch.enable_grad():
            self.hand.step()
        self.resumed, previous = time.perf_counter(), self.resumed
        if previous:
            self.times["firstlight"].append(ended - previous)
            self.times["hand"].append(self.resumed - ended)

    def on_fit_end(self, trainer: L.Trainer, *args: Any) -> None:
        if self.path:
            Path(self.path).write_text(json.dumps(self.times))


def lean(steps: int, pairs: Interleaved | None = None) -> dict[str, list[float]]:
    """The lean variant, each step paired with a hand-written one by `pairs` (by default an Interleaved)."""
    data = digits()
    pairs = pairs or Interleaved(steps)
    trainer = L.Trainer(
        max_steps=steps,
        logger=False,
        enable_progress_bar=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        limit_val_batches=0,
        callbacks=[pairs],
    )
    trainer.fit(model(data), datamodule=data)
    return pairs.times


def default(steps: int, root: Path) -> dict[str, list[float]]:
    path = root / f"times-{time.perf_counter_ns()}.json"
    args = ["--config", "cnn_digits", "--data.batch_size", str(BATCH), "--trainer.max_steps", str(steps)]
    args += ["--trainer.max_epochs", "-1", "--trainer.limit_val_batches", "0", "--run.test", "false"]
    args += ["--checkpoint.monitor", "null", "--model.net.channels_last", "false", "--trainer.precision", "32-true"]
    args += ["--trainer.callbacks+=benchmarks.overhead.Interleaved"]
    args += [f"--trainer.callbacks.steps={steps}", f"--trainer.callbacks.path={path}", "--run.root", str(root)]
    os.environ.pop("FIRSTLIGHT_RUN_ID", None)
    assert run(args) == 0
    return json.loads(path.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(machine_summary())  # the figures below hold for this hardware
    os.environ.setdefault("WANDB_MODE", "offline")
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    ratios: dict[str, list[tuple[float, float, float, float]]] = {"lean": [], "default": []}
    with tempfile.TemporaryDirectory() as scratch:
        for _ in range(args.repeats):
            for name, times in (("lean", lean(args.steps)), ("default", default(args.steps, Path(scratch)))):
                ours, hand = times["firstlight"][10:], times["hand"][10:]  # past the first steps' warm-up
                median_ours, median_hand = statistics.median(ours), statistics.median(hand)
                mean_ratio = statistics.fmean(ours) / statistics.fmean(hand)
                ratios[name].append((median_ours / median_hand, mean_ratio, median_ours, median_hand))
    overall = {}
    for name, runs in ratios.items():
        overall[name] = statistics.median(r[0] for r in runs)
        steps = ", ".join(f"{r[2] * 1000:.2f}/{r[3] * 1000:.2f}" for r in runs)
        print(
            f"{name:8s} median-step ratio {overall[name]:.3f}  mean-step ratio "
            f"{statistics.median(r[1] for r in runs):.3f}  (firstlight/hand ms per repeat: {steps})"
        )
    print(f"overhead default={overall['default']:.3f} lean={overall['lean']:.3f}")


if __name__ == "__main__":
    main()
