"""Images per second delivered to the training step: firstlight's image pipeline vs torchvision's standard one.

    python -m benchmarks.data [--batches 200] [--repeats 3] [--workers 2]

Fashion-MNIST training images in batches of 128, without and with augmentation (random crop with 2 pixels
of padding, horizontal flip), alternated `--repeats` times; the figure is the median rate:

- torchvision: `datasets.FashionMNIST` (a PIL image per sample) with `ToTensor` and `Normalize` (after
  `RandomCrop(28, padding=2)` and `RandomHorizontalFlip` when augmenting), through a shuffling
  `DataLoader` with `--workers` worker processes, as the tutorials write it. Timing starts after the
  first batches, so the workers' start-up is not counted;
- firstlight: `ImageDataModule`: the uint8 images in memory, one gather per batch, then conversion,
  normalisation and augmentation on whole batches (`prepare_batch`, which the Trainer runs on the device
  after transfer; here on the CPU).

Prints each pipeline's images per second and firstlight's speed-up.
"""

from __future__ import annotations

import argparse
import gzip
import shutil
import statistics
import tempfile
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

import torch
from torch.utils.data import DataLoader
from torchvision import datasets, transforms

from datamodules.image import ImageDataModule
from datamodules.image_sources import locate_mnist_like
from experiments.hardware import machine_summary

BATCH = 128
WARMUP = 3  # batches before the clock starts


def torchvision_layout(root: Path) -> Path:
    """Fashion-MNIST's IDX files where torchvision looks for them (root/FashionMNIST/raw, uncompressed)."""
    raw = root / "FashionMNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for path in locate_mnist_like("fashion_mnist", None):
        target = raw / path.name.removesuffix(".gz")
        if path.suffix == ".gz":
            with gzip.open(path) as source, target.open("wb") as out:
                shutil.copyfileobj(source, out)
        else:
            shutil.copy(path, target)
    return root


def torchvision_loader(root: Path, augment: bool, workers: int, mean: float, std: float) -> DataLoader:
    steps: list = [transforms.RandomCrop(28, padding=2), transforms.RandomHorizontalFlip()] if augment else []
    transform = transforms.Compose([*steps, transforms.ToTensor(), transforms.Normalize((mean,), (std,))])
    dataset = datasets.FashionMNIST(str(root), train=True, transform=transform, download=False)
    return DataLoader(dataset, batch_size=BATCH, shuffle=True, num_workers=workers, drop_last=True)


def firstlight_batches(data: ImageDataModule, augment: bool) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    data.hparams["augment"] = augment
    for batch in data.train_dataloader():
        yield data.prepare_batch(batch, training=True)


def images_per_second(batches: Iterable[tuple[torch.Tensor, torch.Tensor]], count: int) -> float:
    iterator = iter(batches)
    for _ in range(WARMUP):
        next(iterator)
    images, start = 0, time.perf_counter()
    for _ in range(count):
        images += len(next(iterator)[1])
    return images / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batches", type=int, default=200, help="batches timed per measurement")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2, help="torchvision DataLoader worker processes")
    args = parser.parse_args()
    print(machine_summary())  # the figures below hold for this hardware
    data = ImageDataModule(dataset="fashion_mnist", batch_size=BATCH, crop_padding=2, hflip=True)
    data.prepare_data()
    data.setup()
    mean, std = float(data.mean.flatten()[0]), float(data.std.flatten()[0])
    with tempfile.TemporaryDirectory() as scratch:
        root = torchvision_layout(Path(scratch))
        rates: dict[tuple[str, bool], list[float]] = {}
        for _ in range(args.repeats):
            for augment in (False, True):
                loader = torchvision_loader(root, augment, args.workers, mean, std)
                rates.setdefault(("torchvision", augment), []).append(images_per_second(loader, args.batches))
                rate = images_per_second(firstlight_batches(data, augment), args.batches)
                rates.setdefault(("firstlight", augment), []).append(rate)
    print(f"Fashion-MNIST, batch {BATCH}, {args.batches} batches, torchvision with {args.workers} workers")
    for augment in (False, True):
        ours, theirs = (statistics.median(rates[name, augment]) for name in ("firstlight", "torchvision"))
        label = "with augmentation   " if augment else "without augmentation"
        print(f"{label}  firstlight {ours:11,.0f} img/s  torchvision {theirs:9,.0f} img/s  x{ours / theirs:.1f}")


if __name__ == "__main__":
    main()
