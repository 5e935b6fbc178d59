"""A prepared image dataset larger than memory: one full pass of its training loader, counted, then training.

    python -m benchmarks.jpeg_folder /data/jpegs --images 500000          # 500,000 JPEGs of 160 px
    python -m experiments.prepare /data/jpegs /data/prepared
    python -m benchmarks.full_pass /data/prepared [--steps 500] [--image_size 64] [--workers 2]

1. The decoded size of the dataset (images x channels x height x width, as the in-memory path would hold it)
   against this machine's memory.
2. One epoch of the training loader (random resized crops and flips decoded by --workers DataLoader workers),
   in a process of its own: how often each training sample was delivered (every one exactly once is the
   claim), images per second, and the peak RSS of the process and of its largest worker.
3. `python -m experiments.run` training the digits preset's CNN for --steps steps on the whole dataset: peak
   RSS of its largest process, and how the batches spread over the data (distinct chunks, classes).

The last line: `full_pass decoded_vs_memory=x<ratio> once=<true|false> rss_loader=<MB> rss_train=<MB>`.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np

from datamodules.image import ImageDataModule
from datamodules.image_shards import chunk_sizes
from datamodules.prepared import read_manifest
from experiments.hardware import machine_summary

REPO = Path(__file__).resolve().parents[1]
PEAK_RSS = (
    "import resource, subprocess, sys; code = subprocess.run(sys.argv[1:]).returncode; "
    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, code)"
)


class SampleSpread(L.Callback):
    """Records the sample ids of every training batch in `path` (a JSON list of lists), for the spread."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.batches: list[list[int]] = []

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        datamodule: Any = trainer.datamodule  # type: ignore[attr-defined]
        prepare = datamodule.prepare_batch

        def recording(batch: Any, training: bool) -> Any:
            if training:
                self.batches.append(batch[2].tolist())
            return prepare(batch, training)

        datamodule.prepare_batch = recording

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        Path(self.path).write_text(json.dumps(self.batches))


def one_pass(prepared: str, image_size: int, workers: int) -> None:
    """(In its own process.) One epoch of the training loader; prints a JSON line of what it counted."""
    data = ImageDataModule(
        dataset="folder",
        data_dir=prepared,
        batch_size=128,
        image_size=image_size,
        augment=True,
        hflip=True,
        workers=workers,
    )
    loader = data.train_dataloader()
    counts = np.zeros(read_manifest(Path(prepared), "images", check_files=False).splits["train"], dtype=np.int64)
    started, batches = time.perf_counter(), 0
    for images, _, ids in loader:
        np.add.at(counts, ids.numpy(), 1)
        batches += 1
        assert images.shape[1:] == (3, image_size, image_size)
    seconds = time.perf_counter() - started
    del loader  # its workers exit and are waited for: their peak is then in RUSAGE_CHILDREN
    result = {
        "samples": int(counts.sum()),
        "train": len(counts),
        "min": int(counts.min()),
        "max": int(counts.max()),
        "batches": batches,
        "seconds": seconds,
        "rss_main_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "rss_worker_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
    }
    print(json.dumps(result))


def train(prepared: Path, image_size: int, workers: int, steps: int, work: Path) -> tuple[float, Path, float]:
    """Peak RSS (MB) of the largest process of a training run, the file of its batches' ids, its seconds."""
    spread = work / "batches.json"
    command = [
        *(sys.executable, "-m", "experiments.run", "--config", "cnn_digits"),
        *("--data.dataset", "folder", "--data.data_dir", str(prepared), "--data.workers", str(workers)),
        *("--data.image_size", str(image_size), "--data.augment", "true", "--data.hflip", "true"),
        *("--data.batch_size", "128", "--trainer.max_steps", str(steps), "--trainer.max_epochs", "1"),
        *("--trainer.val_check_interval", str(steps), "--trainer.limit_val_batches", "20"),
        *("--trainer.limit_test_batches", "20", "--trainer.enable_progress_bar", "false"),
        *("--trainer.callbacks+=benchmarks.full_pass.SampleSpread", f"--trainer.callbacks.path={spread}"),
        *("--run.root", str(work / "runs")),
    ]
    env = os.environ | {"WANDB_MODE": "offline", "PYTHONPATH": str(REPO)}
    started = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-c", PEAK_RSS, *command], cwd=REPO, env=env, capture_output=True, text=True
    )
    peak_kb, code = result.stdout.split()[-2:]
    if code != "0":
        raise RuntimeError(f"training failed:\n{result.stderr[-3000:]}")
    lines = (result.stderr + result.stdout).splitlines()
    print("\n".join(line for line in lines if line.startswith(("data:", "  test/"))))
    return int(peak_kb) / 1024, spread, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("prepared", type=Path)
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--image_size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--pass-only", dest="pass_only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.pass_only:
        one_pass(str(args.prepared), args.image_size, args.workers)
        return
    print(machine_summary(), f"load average {os.getloadavg()[0]:.1f}", sep="; ")
    manifest = read_manifest(args.prepared, "images")
    height, width = manifest.state["size"]
    images = sum(manifest.splits.values())
    decoded = images * manifest.state["channels"] * height * width
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    shards = sum(manifest.files.values())
    print(
        f"{images:,} images of {width}x{height}: {decoded / 2**30:.1f} GiB decoded, {shards / 2**30:.2f} GiB of "
        f"shards, {memory / 2**30:.1f} GiB of memory: decoded x{decoded / memory:.2f} the memory"
    )

    command = [sys.executable, "-m", "benchmarks.full_pass", str(args.prepared), "--pass-only"]
    command += ["--image_size", str(args.image_size), "--workers", str(args.workers)]
    output = subprocess.run(
        command, cwd=REPO, capture_output=True, text=True, env=os.environ | {"PYTHONPATH": str(REPO)}
    )
    if output.returncode != 0:
        raise RuntimeError(output.stderr[-3000:])
    counted = json.loads(output.stdout.strip().splitlines()[-1])
    once = counted["min"] == counted["max"] == 1 and counted["samples"] == counted["train"]
    print(
        f"one epoch of the training loader: {counted['samples']:,} samples delivered for {counted['train']:,} "
        f"training images (each delivered min {counted['min']}, max {counted['max']} times) in "
        f"{counted['batches']:,} batches, {counted['seconds']:.0f} s, {counted['samples'] / counted['seconds']:,.0f} "
        f"images/s with {args.workers} workers; peak RSS {counted['rss_main_mb']:,.0f} MB (loader process), "
        f"{counted['rss_worker_mb']:,.0f} MB (largest worker)"
    )

    with tempfile.TemporaryDirectory() as work:
        rss_train, spread, seconds = train(args.prepared, args.image_size, args.workers, args.steps, Path(work))
        batches = json.loads(spread.read_text())
    ends = np.cumsum(chunk_sizes(args.prepared / "train"))
    ids = np.array([i for batch in batches for i in batch])
    chunks = np.unique(np.searchsorted(ends, ids, side="right"))  # ids are positions when no image was skipped
    print(
        f"training {len(batches)} steps in {seconds:.0f} s: peak RSS {rss_train:,.0f} MB (largest process); "
        f"{len(ids):,} samples from {len(chunks)} of {len(ends)} chunks, ids {ids.min():,}-{ids.max():,} of "
        f"{counted['train']:,}"
    )
    rss_loader = max(counted["rss_main_mb"], counted["rss_worker_mb"])
    print(
        f"full_pass decoded_vs_memory=x{decoded / memory:.2f} once={str(once).lower()} "
        f"rss_loader={rss_loader:.0f} rss_train={rss_train:.0f}"
    )


if __name__ == "__main__":
    main()
