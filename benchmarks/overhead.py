"""What firstlight costs over a hand-written PyTorch loop: the same CNN, data and batch size, side by side.

    python -m benchmarks.overhead [--steps 300] [--repeats 3]

The digits CNN (channels 32-64, hidden 128) on the 1,294 training digits in batches of 128, AdamW with the
preset's cosine schedule, trained three ways, alternated `--repeats` times in this one process:

- hand: a plain loop: index a batch of the uint8 tensors, normalise, forward, cross-entropy, backward,
  optimizer and scheduler step;
- lean: `ImageClassifier` and `ImageDataModule` through Lightning's Trainer without logger, progress bar
  or checkpoints;
- default: `python -m experiments.run --config cnn_digits` as users run it (W&B offline, checkpoints,
  the logging callbacks, history.jsonl), validation switched off so that only training steps compare.

Each step is timed from the end of one to the end of the next (data, step and hooks all count); the
figure is the median step, then the median over the repeats. The last line reads
`overhead default=<ratio> lean=<ratio>` (ratios to the hand-written loop).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch import nn

from datamodules.image import ImageDataModule
from experiments.run import main as run
from modules.image_classifier import ImageClassifier
from modules.optim import build_optimizer, build_scheduler

BATCH = 128


class StepTimes(L.Callback):
    """Seconds between the ends of consecutive training batches; written to `path` when fitting ends."""

    def __init__(self, path: str = "") -> None:
        self.path = path
        self.times: list[float] = []
        self.last = 0.0

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        now = time.perf_counter()
        if self.last:
            self.times.append(now - self.last)
        self.last = now

    def on_fit_end(self, trainer: L.Trainer, *args: Any) -> None:
        if self.path:
            Path(self.path).write_text(json.dumps(self.times))


def digits() -> ImageDataModule:
    data = ImageDataModule(dataset="digits", batch_size=BATCH)
    data.prepare_data()
    data.setup()
    return data


def model(data: ImageDataModule) -> ImageClassifier:
    torch.manual_seed(0)
    return ImageClassifier(
        image_shape=data.image_shape, num_classes=data.num_classes, channels=(32, 64), hidden_dim=128, lr=3e-3
    )


def hand_written(steps: int) -> list[float]:
    data = digits()
    classifier = model(data)
    net, images, labels = classifier.net, *data.splits["train"]
    mean, std = data.mean, data.std
    # The optimizer and schedule that the module configures for itself under the Trainer.
    c = classifier
    optimizer = build_optimizer(c, c.optimizer_name, c.lr, c.weight_decay, c.momentum, c.nesterov, c.betas)
    scheduler = build_scheduler(optimizer, c.scheduler_name, steps, c.warmup_fraction)
    assert scheduler is not None
    loss_fn = nn.CrossEntropyLoss()
    generator = torch.Generator().manual_seed(0)
    order = torch.randperm(len(labels), generator=generator)
    times, last, position = [], 0.0, 0
    net.train()
    for _ in range(steps):
        if position + BATCH > len(order):
            order, position = torch.randperm(len(labels), generator=generator), 0
        index = order[position : position + BATCH]
        position += BATCH
        x = (images[index].float().div_(255) - mean) / std
        loss = loss_fn(net(x), labels[index])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        now = time.perf_counter()
        if last:
            times.append(now - last)
        last = now
    return times


def lean(steps: int) -> list[float]:
    data = digits()
    timer = StepTimes()
    trainer = L.Trainer(
        max_steps=steps,
        logger=False,
        enable_progress_bar=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        limit_val_batches=0,
        callbacks=[timer],
    )
    trainer.fit(model(data), datamodule=data)
    return timer.times


def default(steps: int, root: Path) -> list[float]:
    path = root / f"times-{time.perf_counter_ns()}.json"
    args = ["--config", "cnn_digits", "--data.batch_size", str(BATCH), "--trainer.max_steps", str(steps)]
    args += ["--trainer.max_epochs", "-1", "--trainer.limit_val_batches", "0", "--run.test", "false"]
    args += ["--checkpoint.monitor", "null", "--trainer.callbacks+=benchmarks.overhead.StepTimes"]
    args += [f"--trainer.callbacks.path={path}", "--run.root", str(root)]
    os.environ.pop("FIRSTLIGHT_RUN_ID", None)
    assert run(args) == 0
    return json.loads(path.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    os.environ.setdefault("WANDB_MODE", "offline")
    medians: dict[str, list[float]] = {"hand": [], "lean": [], "default": []}
    with tempfile.TemporaryDirectory() as scratch:
        for _ in range(args.repeats):
            medians["hand"].append(statistics.median(hand_written(args.steps)[10:]))
            medians["lean"].append(statistics.median(lean(args.steps)[10:]))
            medians["default"].append(statistics.median(default(args.steps, Path(scratch))[10:]))
    step = {name: statistics.median(values) for name, values in medians.items()}
    for name, values in medians.items():
        spread = ", ".join(f"{value * 1000:.2f}" for value in values)
        print(f"{name:8s} median step {step[name] * 1000:.2f} ms  (repeats: {spread} ms)")
    print(f"overhead default={step['default'] / step['hand']:.3f} lean={step['lean'] / step['hand']:.3f}")


if __name__ == "__main__":
    main()
