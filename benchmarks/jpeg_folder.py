"""Generated image folders for the data benchmarks: JPEGs of real-photo size per file, learnable classes.

    python -m benchmarks.jpeg_folder OUT --images 500000 [--size 160] [--classes 10] [--workers 2]

Each class is a colour and an orientation of stripes, drawn at a random phase and frequency over a noisy
background, so a CNN can learn the classes and the files compress as photos do (about 11 KB at 160 px,
quality 90), not as flat colours (a few hundred bytes) or white noise (tens of KB). The folder is
`OUT/<class>/<index>.jpg`; image i of the whole folder is the same for any number of workers, and a run
that was stopped continues where it stopped (files already written are kept).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

CHUNK = 2_000  # images per task handed to a worker


def class_name(label: int) -> str:
    return f"class_{label:02d}"


def synthetic_image(index: int, size: int, classes: int) -> tuple[np.ndarray, int]:
    """Image `index` of the folder: (H, W, 3) uint8 and its class, from a seed of its own."""
    rng = np.random.default_rng(index)
    label = index % classes
    angle = math.pi * label / classes  # each class its orientation ...
    colour = np.array([(label * 97) % 256, (label * 53 + 80) % 256, (label * 191 + 40) % 256], dtype=np.float32)
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) / size
    frequency = rng.uniform(3, 8)
    phase = rng.uniform(0, 2 * math.pi)
    stripes = 0.5 + 0.5 * np.sin(2 * math.pi * frequency * (x * math.cos(angle) + y * math.sin(angle)) + phase)
    background = rng.uniform(40, 200, 3).astype(np.float32)
    pixels = background + stripes[..., None] * (colour - background)  # ... and its colour
    pixels += rng.normal(0, 12, (size, size, 3)).astype(np.float32)
    return np.clip(pixels, 0, 255).astype(np.uint8), label


def write_range(out: str, start: int, stop: int, size: int, classes: int) -> int:
    written = 0
    for index in range(start, stop):
        pixels, label = synthetic_image(index, size, classes)
        path = Path(out) / class_name(label) / f"{index:07d}.jpg"
        if path.exists():
            continue
        partial = path.with_name(f".{path.name}.tmp")
        Image.fromarray(pixels).save(partial, "JPEG", quality=90)
        partial.replace(path)  # a stopped run never leaves a half-written image under its final name
        written += 1
    return written


def make_jpeg_folder(out: Path, images: int, size: int = 160, classes: int = 10, workers: int = 1) -> Path:
    """Write (or complete) the folder of `images` JPEGs; returns `out`."""
    for label in range(classes):
        (out / class_name(label)).mkdir(parents=True, exist_ok=True)
    ranges = [(start, min(start + CHUNK, images)) for start in range(0, images, CHUNK)]
    if workers <= 1:
        for start, stop in ranges:
            write_range(str(out), start, stop, size, classes)
        return out
    with ProcessPoolExecutor(workers) as pool:
        futures = [pool.submit(write_range, str(out), start, stop, size, classes) for start, stop in ranges]
        started = time.perf_counter()
        for done, future in enumerate(futures, 1):
            future.result()
            if sys.stderr.isatty() or done % 25 == 0 or done == len(futures):
                rate = done * CHUNK / (time.perf_counter() - started)
                print(f"\r{min(done * CHUNK, images):,}/{images:,} images ({rate:,.0f}/s)", end="", file=sys.stderr)
    print(file=sys.stderr)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--images", type=int, required=True)
    parser.add_argument("--size", type=int, default=160)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    make_jpeg_folder(args.out, args.images, args.size, args.classes, args.workers)


if __name__ == "__main__":
    main()
