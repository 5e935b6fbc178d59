"""Memory and speed of streaming image folders from prepared shards, side by side in one run.

    python -m benchmarks.data_scale [--images 4000] [--size 160] [--image_size 128] [--workers 2] [--repeats 5]

On generated JPEG folders (`benchmarks.jpeg_folder`) of N and 8N images:

- peak RSS (the largest process of the run: the trainer or one of its DataLoader workers) and the time from
  the command's start to its first training step, for `python -m experiments.run` training the digits CNN
  from the prepared shards of N and of 8N images, and from the N-image folder held in memory (medians of
  --runs runs, the cases taking turns);
- images per second delivered over the 8N images by two loaders with the same workers and the same
  transforms (RandomResizedCrop to --image_size, horizontal flip, a uint8 tensor), firstlight's streaming
  path (`ImageDataModule` on the prepared shards) and torchvision's `ImageFolder` + `DataLoader` as the
  tutorials write it, both with persistent workers; and by bare decode loops (PIL, and simplejpeg, each file
  decoded once in as many processes as workers, nothing else), the limit of this CPU. Every file is read once
  before the rounds, so that all four find them in the page cache. The four take turns
  for --repeats rounds of --batches batches each (after warm-up), so a burst of other work on the machine
  hits them alike; the ratios are taken within each round, and their medians compared.

The last line: `data_scale rss_N=<MB> rss_8N=<MB> stream_vs_imagefolder=x<ratio> stream_vs_decode=x<ratio>`
(the decode loop: PIL's, as ImageFolder's). `--runs 0` leaves out the training runs.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from PIL import Image
from torch.utils.data import DataLoader
from torchvision import datasets
from torchvision.transforms import v2

from benchmarks.jpeg_folder import make_jpeg_folder
from datamodules.image import ImageDataModule
from datamodules.image_shards import prepare_images
from experiments.hardware import machine_summary

BATCH = 128
WARMUP = 3  # batches before the clock starts (workers starting, files opening)
REPO = Path(__file__).resolve().parents[1]
LOADERS = {
    "streaming": "firstlight streaming",
    "imagefolder": "torchvision ImageFolder",
    "pil": "bare PIL decode, {workers} processes",
    "simplejpeg": "bare simplejpeg decode, {workers} processes",
}
# Runs the command given after it and prints the peak RSS (KB) of the largest process it waited for.
PEAK_RSS = (
    "import resource, subprocess, sys; code = subprocess.run(sys.argv[1:]).returncode; "
    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, code)"
)


def training_run(data_dir: Path, image_size: int, workers: int, loading: str, root: Path) -> tuple[float, float]:
    """(peak RSS in MB, seconds from start to the first training step) of a 20-step run of the digits CNN."""
    command = [
        *(sys.executable, "-m", "experiments.run", "--config", "cnn_digits"),
        *("--data.dataset", "folder", "--data.data_dir", str(data_dir), "--data.loading", loading),
        *("--data.image_size", str(image_size), "--data.augment", "true", "--data.hflip", "true"),
        *("--data.batch_size", str(BATCH), "--data.workers", str(workers)),
        # 20 steps, fewer than an epoch of N images: no run validates, so every run does the same work
        *("--trainer.max_steps", "20", "--trainer.limit_val_batches", "2", "--trainer.num_sanity_val_steps", "0"),
        *("--run.test", "false", "--run.root", str(root), "--trainer.enable_progress_bar", "false"),
    ]
    env = os.environ | {"WANDB_MODE": "disabled", "PYTHONPATH": str(REPO)}
    started = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, "-c", PEAK_RSS, *command], cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    first_step = float("nan")
    lines = []
    assert process.stderr is not None and process.stdout is not None
    for raw in process.stderr:  # the start note's data line is printed as training starts
        line = raw.decode(errors="replace")
        lines.append(line)
        if line.startswith("data:") and first_step != first_step:
            first_step = time.perf_counter() - started
    peak_kb, code = process.stdout.read().decode().split()[-2:]  # after what the run printed
    if process.wait() != 0 or code != "0":
        raise RuntimeError(f"the run from {data_dir} failed:\n{''.join(lines[-20:])}")
    return int(peak_kb) / 1024, first_step


def images_per_second(batches: Iterable, count: int) -> float:
    """Rate over `count` batches of one pass, after WARMUP batches."""
    iterator = iter(batches)
    for _ in range(WARMUP):
        next(iterator)
    seen, started = 0, time.perf_counter()
    for _, batch in zip(range(count), iterator, strict=False):
        seen += len(batch[1])
    return seen / (time.perf_counter() - started)


def read_through(paths: list[str]) -> None:
    """Reads every file once, so that each loader finds them all in the page cache: the rounds then measure
    decoding and augmenting, the limit of this CPU, not which loader happened to read a file first."""
    for path in paths:
        with open(path, "rb") as file:
            while file.read(1 << 20):
                pass


def decode_with_pil(paths: list[str]) -> int:
    for path in paths:
        with Image.open(path) as image:
            image.convert("RGB")
    return len(paths)


def decode_with_simplejpeg(paths: list[str]) -> int:
    import simplejpeg

    for path in paths:
        with open(path, "rb") as file:
            simplejpeg.decode_jpeg(file.read(), colorspace="RGB")
    return len(paths)


def decode_rate(pool: Any, decode: Callable[[list[str]], int], paths: list[str], processes: int) -> float:
    """Images per second of `processes` processes decoding `paths` (each a share), nothing else."""
    shares = [paths[i::processes] for i in range(processes)]
    started = time.perf_counter()
    done = sum(pool.map(decode, shares))
    return done / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=4000, help="N: the smaller folder; the larger is 8N")
    parser.add_argument("--size", type=int, default=160, help="pixels of the generated JPEGs")
    parser.add_argument("--image_size", type=int, default=128, help="pixels of the training crops")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batches", type=int, default=100, help="batches timed per pass")
    parser.add_argument("--repeats", type=int, default=5, help="passes of each loader")
    parser.add_argument("--runs", type=int, default=3, help="training runs of each case (medians are printed)")
    parser.add_argument("--workdir", type=Path, help="keep the folders here (default: a temporary folder)")
    args = parser.parse_args()
    print(machine_summary(), f"load average {os.getloadavg()[0]:.1f}", sep="; ")
    with tempfile.TemporaryDirectory() as temporary:
        work = args.workdir or Path(temporary)
        folders, prepared = {}, {}
        for name, count in (("N", args.images), ("8N", 8 * args.images)):
            folders[name] = make_jpeg_folder(work / f"jpegs-{count}", count, args.size, workers=args.workers)
            prepared[name] = work / f"prepared-{count}"
            if not (prepared[name] / "firstlight.json").exists():
                started = time.perf_counter()
                prepare_images(folders[name], prepared[name], workers=args.workers, progress=False)
                print(f"prepared {count:,} images in {time.perf_counter() - started:.1f} s")

        print(f"\ntraining runs (digits CNN, batch {BATCH}, {args.image_size} px crops, {args.workers} workers):")
        cases = {
            "N in memory": (folders["N"], "memory"),
            "N streaming": (prepared["N"], "streaming"),
            "8N streaming": (prepared["8N"], "streaming"),
        }
        measured: dict[str, list[tuple[float, float]]] = {label: [] for label in cases}
        for _ in range(args.runs):  # the cases take turns, so a burst of other work hits them alike
            for label, (folder, loading) in cases.items():
                measured[label].append(training_run(folder, args.image_size, args.workers, loading, work / "runs"))
        runs = {}
        for label, results in measured.items():
            if not results:
                runs[label] = (float("nan"), float("nan"))
                continue
            runs[label] = (statistics.median(r[0] for r in results), statistics.median(r[1] for r in results))
            each = ", ".join(f"{r[0]:,.0f}" for r in results)
            print(
                f"  {label:<14} peak RSS {runs[label][0]:8,.0f} MB ({each})   first step after {runs[label][1]:6.1f} s"
            )

        print(f"\nimages/s over {8 * args.images:,} images, median of {args.repeats} rounds (the loaders take turns):")
        data = ImageDataModule(
            dataset="folder",
            data_dir=str(prepared["8N"]),
            batch_size=BATCH,
            image_size=args.image_size,
            augment=True,
            hflip=True,
            workers=args.workers,
        )
        streamed = data.train_dataloader()  # its workers persist, as the ImageFolder loader's
        transform = v2.Compose(
            [v2.RandomResizedCrop(args.image_size, antialias=True), v2.RandomHorizontalFlip(), v2.PILToTensor()]
        )
        folder = datasets.ImageFolder(str(folders["8N"]), transform=transform)
        loader = DataLoader(folder, BATCH, shuffle=True, num_workers=args.workers, persistent_workers=True)
        paths = [path for path, _ in folder.samples]
        random.Random(0).shuffle(paths)
        read_through([*paths, *(str(path) for path in prepared["8N"].rglob("*") if path.is_file())])
        per_round = (WARMUP + args.batches) * BATCH  # as many files as the loaders read in a round
        rates: dict[str, list[float]] = {name: [] for name in LOADERS}
        with get_context("fork").Pool(args.workers) as pool:
            pool.map(decode_with_pil, [paths[:20]] * args.workers)  # workers started, libraries loaded
            pool.map(decode_with_simplejpeg, [paths[:20]] * args.workers)
            for round_number in range(args.repeats):  # a burst of other work on the machine hits all alike
                streamed.sampler.set_epoch(round_number)  # another order, as a new epoch
                rates["streaming"].append(images_per_second(streamed, args.batches))
                rates["imagefolder"].append(images_per_second(loader, args.batches))
                start = round_number * per_round % len(paths)
                files = (paths[start:] + paths[:start])[:per_round]
                rates["pil"].append(decode_rate(pool, decode_with_pil, files, args.workers))
                rates["simplejpeg"].append(decode_rate(pool, decode_with_simplejpeg, files, args.workers))
        medians = {name: statistics.median(values) for name, values in rates.items()}
        for name, label in LOADERS.items():
            each = ", ".join(f"{rate:,.0f}" for rate in rates[name])
            print(f"  {label.format(workers=args.workers):<38} {medians[name]:8,.0f}   ({each})")
        # Ratios within a round (its loaders ran minutes apart at most), then their median over the rounds.
        ratios = {
            name: statistics.median(s / r for s, r in zip(rates["streaming"], rates[name], strict=True))
            for name in ("imagefolder", "pil", "simplejpeg")
        }
        print(
            f"  streaming / ImageFolder x{ratios['imagefolder']:.2f}, / bare PIL decode x{ratios['pil']:.2f}, "
            f"/ bare simplejpeg decode x{ratios['simplejpeg']:.2f} (median of the rounds' ratios; streaming "
            "decodes with simplejpeg, then also crops, resizes and flips)"
        )
    rss_n, rss_8n = runs["N streaming"][0], runs["8N streaming"][0]
    print(
        f"data_scale rss_N={rss_n:.0f} rss_8N={rss_8n:.0f} "
        f"stream_vs_imagefolder=x{ratios['imagefolder']:.2f} "
        f"stream_vs_decode=x{ratios['pil']:.2f}"
    )


if __name__ == "__main__":
    main()
