"""Image folders as prepared shards (LitData chunks): written once in parallel, then read by DataLoader workers
that decode and augment each image at its real resolution.

    <output>/firstlight.json           manifest (`datamodules.prepared`): classes, channels, statistics, splits
    <output>/<split>/index.json        LitData's index of the split's chunks
    <output>/<split>/chunk-P-N.bin     samples {"image": encoded bytes, "label": int, "index": sample id}

The files of each split are written in a random order (seeded), so every chunk is a sample of the whole
split and a batch read from a few chunks is a fair draw. A JPEG, PNG or WebP of 8-bit grey or colour is
stored as the bytes of the file, untouched; other images (16-bit, palette, TIFF, ...) as lossless PNGs of
their 8-bit pixels (read as `image_folder.read_image` reads them). Unreadable files are skipped and named.

Work is cut into parts of PART images; each part is written by one worker into a folder of its own and
renamed into place when complete, so a stopped prepare, run again, redoes at most the parts in flight.
"""

from __future__ import annotations

import functools
import io
import json
import math
import multiprocessing
import os
import random
import shutil
import signal
import sys
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

os.environ.setdefault("LITDATA_DISABLE_VERSION_CHECK", "1")  # litdata asks PyPI for news on every optimize

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset, get_worker_info

from datamodules.image_folder import UNREADABLE, class_names, image_files, read_image, split_dirs
from datamodules.prepared import MANIFEST, Manifest, fingerprint, is_prepared
from datamodules.streaming import SHUFFLE_WINDOW
from packaged import sha256_of
from validation import ConfigError

KIND = "images"
PART = 4_096  # images per unit of work (and of resumption)
CHUNK_BYTES = 16_000_000  # per LitData chunk: what a worker maps at a time (about 1,500 photos of 160 px)
STORED_AS_IS = ("JPEG", "PNG", "WEBP")
IN_PROGRESS = ".firstlight-prepare.json"  # settings of a prepare under way; removed when it completes
LEVELS = np.arange(256) / 255  # each 8-bit value as a share of full scale


def list_images(root: Path, val_fraction: float, test_fraction: float, seed: int) -> dict[str, list[tuple[str, int]]]:
    """split -> (path, label) of its images, in the random order they are written in. Without train/val/test
    sub-folders, test and then validation images are drawn from the whole folder, as the in-memory path does."""
    classes = class_names(root)
    rng = random.Random(seed)
    splits: dict[str, list[tuple[str, int]]] = {}
    for split, folder in split_dirs(root).items():
        splits[split] = [
            (str(path), label) for label, name in enumerate(classes) for path in image_files(folder / name)
        ]
        rng.shuffle(splits[split])
    for split, fraction in (("test", test_fraction), ("val", val_fraction)):
        if split not in splits:
            taken = round(fraction * len(splits["train"]))
            splits[split], splits["train"] = splits["train"][:taken], splits["train"][taken:]
    return splits


def stored_bytes(path: Path, image: Image.Image, mode: str) -> bytes:
    """The bytes to store for an image decoded from `path` (see the module's docstring)."""
    if image.format in STORED_AS_IS and image.mode == mode:
        return path.read_bytes()
    buffer = io.BytesIO()
    image.convert(mode).save(buffer, "PNG", compress_level=1)
    return buffer.getvalue()


def write_part(folder: str, items: list[tuple[str, int, int]], mode: str, statistics: bool) -> dict[str, Any]:
    """Write one part's images as a LitData dataset in `folder`; its pixel sums for the statistics, its sizes
    and the files skipped as unreadable come back."""
    from litdata.streaming.writer import BinaryWriter

    partial = Path(f"{folder}.partial")
    shutil.rmtree(partial, ignore_errors=True)  # what a stopped run left of this part
    writer = BinaryWriter(str(partial), chunk_bytes=CHUNK_BYTES)
    channels = 1 if mode == "L" else 3
    sums, squares, pixels = np.zeros(channels), np.zeros(channels), 0
    sizes: set[tuple[int, int]] = set()
    skipped: list[str] = []
    written = 0
    for path, label, sample_id in items:
        try:
            image = read_image(Path(path))
            data = stored_bytes(Path(path), image, mode)
        except UNREADABLE as error:
            skipped.append(f"{path}: {error}")
            continue
        writer[written] = {"image": data, "label": label, "index": sample_id}
        written += 1
        sizes.add(image.size)
        if statistics:  # exact, from each channel's histogram of 0-255 values
            counts = np.array(image.convert(mode).histogram(), dtype=np.float64).reshape(channels, 256)
            sums += counts @ LEVELS
            squares += counts @ LEVELS**2
            pixels += image.width * image.height
    if written:
        writer.done()
        writer.merge()
    else:
        partial.mkdir(parents=True, exist_ok=True)
    stats = {"sums": sums.tolist(), "squares": squares.tolist(), "pixels": pixels, "count": written}
    (partial / "part.json").write_text(json.dumps(stats | {"sizes": sorted(sizes), "skipped": skipped}))
    partial.replace(folder)  # complete: a rerun skips it
    return json.loads((Path(folder) / "part.json").read_text())


def write_part_task(task: tuple[Any, ...]) -> dict[str, Any]:
    return write_part(*task)


def ignore_interrupts() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def merge_parts(split_dir: Path) -> dict[str, Any]:
    """Move the parts' chunks into `split_dir` (renamed chunk-P-N.bin) with one index.json over all of them, in
    part order, and sum the parts' statistics into stats.json; returns those. Safe to rerun after a stop."""
    parts = sorted((split_dir / "parts").iterdir())
    results = [json.loads((part / "part.json").read_text()) for part in parts]
    chunks, config = gather_chunks(split_dir, parts)
    if config is None:
        raise ConfigError(f"no readable images for the {split_dir.name} split; check the source folder")
    stats = {
        "count": sum(chunk["chunk_size"] for chunk in chunks),
        "sums": np.sum([r["sums"] for r in results], axis=0).tolist(),
        "squares": np.sum([r["squares"] for r in results], axis=0).tolist(),
        "pixels": sum(r["pixels"] for r in results),
        "sizes": sorted({tuple(size) for r in results for size in r["sizes"]}),
    }
    write_json(split_dir / "stats.json", stats)
    write_json(split_dir / "index.json", {"chunks": chunks, "config": config})  # the split is complete
    shutil.rmtree(split_dir / "parts")
    return stats


def gather_chunks(split_dir: Path, parts: list[Path]) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    """Move the chunks of finished parts (LitData datasets of their own) into `split_dir`, renamed
    chunk-P-N.bin; their index entries in part order, and the parts' shared config (None if no part has any
    sample). Safe to rerun after a stop: chunks already moved are found in place."""
    chunks: list[dict[str, Any]] = []
    config = None
    for number, part in enumerate(parts):
        index_file = part / "index.json"
        if not index_file.is_file():  # a part without samples of this split
            continue
        index = json.loads(index_file.read_text())
        config = config or index["config"]
        for n, chunk in enumerate(index["chunks"]):
            name = f"chunk-{number}-{n}.bin"
            if (part / chunk["filename"]).exists():
                (part / chunk["filename"]).replace(split_dir / name)
            chunks.append(chunk | {"filename": name})
    return chunks, config


def write_json(path: Path, data: Any) -> None:
    partial = path.with_name(f".{path.name}.tmp")
    partial.write_text(json.dumps(data, sort_keys=True))
    partial.replace(path)


def first_mode(splits: dict[str, list[tuple[str, int]]]) -> str:
    """ "L" if the first readable training image is grey, else "RGB" (as the in-memory path decides)."""
    for path, _ in splits["train"]:
        try:
            image = read_image(Path(path))
        except UNREADABLE:
            continue
        return "L" if Image.getmodebase(image.mode) == "L" else "RGB"
    raise ConfigError("no readable images in the training part of the folder")


def claim_shard_folder(output: Path, settings: dict[str, Any], overwrite: bool) -> None:
    """Claim `output` for a prepare's shards, refusing where that would lose something: new, empty, or an
    unfinished prepare of the same settings is taken as it is; a finished dataset or an unfinished prepare of
    other settings only with `overwrite` (then cleared); a folder of other files never."""
    if is_prepared(output):
        if not overwrite:
            raise ConfigError(f"{output} is already a prepared dataset; give --overwrite to prepare it again")
        clear_prepared(output)
    marker = output / IN_PROGRESS
    if marker.is_file():
        if json.loads(marker.read_text()) != settings:
            if not overwrite:
                raise ConfigError(
                    f"{output} holds an unfinished prepare with other settings; give the same source and options "
                    "to go on, or --overwrite to start again"
                )
            clear_prepared(output)
    elif output.exists() and (not output.is_dir() or any(output.iterdir())):
        raise ConfigError(f"{output} exists and is not a prepared dataset; give a new or empty folder")


def clear_prepared(output: Path) -> None:
    """Remove what a prepare writes, and nothing else."""
    for name in ("train", "val", "test"):
        shutil.rmtree(output / name, ignore_errors=True)
    for name in (MANIFEST, IN_PROGRESS):
        (output / name).unlink(missing_ok=True)


def prepare_images(
    source: Path,
    output: Path,
    *,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    seed: int = 0,
    workers: int | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> Manifest:
    """Prepare an image folder (the layouts of `image_folder`) as shards in `output`; resumable (see above)."""
    source, output = source.resolve(), output.resolve()
    settings: dict[str, Any] = {
        "kind": KIND,
        "source": str(source),
        "fingerprint": fingerprint(source),
        "val_fraction": val_fraction,
        "test_fraction": test_fraction,
        "seed": seed,
    }
    claim_shard_folder(output, settings, overwrite)
    splits = list_images(source, val_fraction, test_fraction, seed)
    mode = first_mode(splits)
    output.mkdir(parents=True, exist_ok=True)
    (output / IN_PROGRESS).write_text(json.dumps(settings))
    tasks = []
    for split, items in splits.items():
        if (output / split / "index.json").is_file():  # merged by an earlier run
            continue
        numbered = [(path, label, sample_id) for sample_id, (path, label) in enumerate(items)]
        for number, start in enumerate(range(0, len(numbered), PART)):
            folder = output / split / "parts" / f"{number:06d}"
            tasks.append((str(folder), numbered[start : start + PART], mode, split == "train"))
    results = run_parts(tasks, workers or os.cpu_count() or 1, progress, sum(len(items) for items in splits.values()))
    skipped = [line for result in results for line in result["skipped"]]
    for line in skipped[:20]:
        warnings.warn(f"skipping unreadable image {line}", stacklevel=2)
    if len(skipped) > 20:
        warnings.warn(f"... and {len(skipped) - 20} more unreadable images skipped", stacklevel=2)
    stats = {}
    for split in splits:
        if not (output / split / "index.json").is_file():
            merge_parts(output / split)
        stats[split] = json.loads((output / split / "stats.json").read_text())
    manifest = Manifest(
        kind=KIND,
        source=str(source),
        fingerprint=settings["fingerprint"],
        splits={split: stats[split]["count"] for split in splits},
        state=image_state(stats, mode, class_names(source)),
        settings={k: settings[k] for k in ("val_fraction", "test_fraction", "seed")},
    )
    manifest.write(output)
    (output / IN_PROGRESS).unlink()
    return manifest


def run_parts(tasks: list[tuple[Any, ...]], workers: int, progress: bool, total: int) -> list[dict[str, Any]]:
    """Write the parts not written yet, `workers` at a time, with a progress line; the results of all parts
    (finished earlier or now) come back."""
    results, pending = [], []
    for task in tasks:
        done = Path(task[0]) / "part.json"
        if done.is_file():
            results.append(json.loads(done.read_text()))
        else:
            pending.append(task)
    finished = sum(result["count"] + len(result["skipped"]) for result in results)
    first, started = finished, time.perf_counter()
    # Workers ignore Ctrl-C: the main process gets it (or SIGTERM) and stops them at once; their parts in
    # flight stay unfinished (".partial") and are written again by the next run. A worker that dies (killed
    # for memory) breaks the pool, which says so, rather than leaving its part waited for forever.
    context = multiprocessing.get_context("fork")
    pool = ProcessPoolExecutor(max(1, min(workers, len(pending) or 1)), context, initializer=ignore_interrupts)
    try:
        for result in pool.map(write_part_task, pending):
            results.append(result)
            finished += result["count"] + len(result["skipped"])
            if progress:
                rate = (finished - first) / (time.perf_counter() - started)
                print(f"\rprepare: {finished:,}/{total:,} images ({rate:,.0f}/s)", end="", file=sys.stderr, flush=True)
    except BaseException:
        for process in multiprocessing.active_children():
            process.terminate()
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    if progress and pending:
        print(file=sys.stderr)
    return results


def read_index(split_dir: Path) -> list[dict[str, Any]]:
    """The chunks of a prepared split (LitData's index.json), in index order."""
    try:
        chunks = json.loads((split_dir / "index.json").read_text())["chunks"]
        return [{"filename": str(chunk["filename"]), "chunk_size": int(chunk["chunk_size"])} for chunk in chunks]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ConfigError(f"{split_dir / 'index.json'} cannot be read ({error}); prepare the dataset again") from None


def chunk_sizes(split_dir: Path) -> list[int]:
    """Samples per chunk of a prepared split, in index order."""
    return [chunk["chunk_size"] for chunk in read_index(split_dir)]


def image_state(stats: dict[str, dict[str, Any]], mode: str, classes: list[str]) -> dict[str, Any]:
    """The manifest's state: classes, channels, the training images' per-channel mean and std (exact, over
    every pixel, at their stored size) and the images' size where all splits share one (else None)."""
    train = stats["train"]
    count = train["pixels"]
    mean = np.array(train["sums"]) / count
    std = np.sqrt(np.maximum(np.array(train["squares"]) - count * mean**2, 0) / max(1, count - 1))  # as torch.std
    sizes = {tuple(size) for split in stats.values() for size in split["sizes"]}
    (width, height) = next(iter(sizes)) if len(sizes) == 1 else (None, None)
    return {
        "classes": classes,
        "channels": 1 if mode == "L" else 3,
        "mean": mean.tolist(),
        "std": std.tolist(),
        "size": [height, width] if height else None,
    }


class ShardImages(Dataset):
    """One split of prepared images, read by DataLoader workers: (sample, epoch) pairs -> (uint8 image
    (C, H, W), label, sample id), decoded, converted to the dataset's channels, then resized to `size` or,
    when `augment`, cropped at random (area `crop_scale` of the image, aspect 3/4 to 4/3) and resized to it,
    and flipped left-right at random if `hflip`. A sample's randomness is drawn from (seed, epoch, sample),
    never from the process's generator: any worker, any number of workers, a resumed run, all draw the same.
    """

    def __init__(
        self,
        folder: Path,
        channels: int,
        size: tuple[int, int] | None,
        *,
        augment: bool = False,
        hflip: bool = False,
        crop_scale: tuple[float, float] = (0.08, 1.0),
        seed: int = 0,
        digests: dict[str, str] | None = None,
    ) -> None:
        self.folder = folder
        self.chunks = [chunk["filename"] for chunk in read_index(folder)]
        self.chunk_ends = np.cumsum(chunk_sizes(folder))
        self.digests = digests or {}  # chunk file name -> sha256 when prepared; each checked as first read
        self.verified: set[int] = set()
        self.mode = "L" if channels == 1 else "RGB"
        self.size = size
        self.augment = augment
        self.hflip = hflip
        self.crop_scale = crop_scale
        self.seed = seed
        self.reader: Any = None  # litdata's StreamingDataset, opened in each worker on first use
        # Imported here, in the training process, for the workers to inherit: imported first inside a worker
        # forked after W&B has started, litdata's import of orjson fails.
        import litdata  # noqa: F401

    def __len__(self) -> int:
        return sum(chunk_sizes(self.folder))

    def open(self) -> Any:
        if self.reader is None:
            from litdata import StreamingDataset

            # Read by index, in batches mixed from a shuffle window's chunks. litdata keeps this many chunks
            # mapped (its default, 4, is fewer than a window's dozen: chunks were mapped again and again), and
            # reads one sample per index (its default decodes the ~100 around it, for reading in order).
            sizes = chunk_sizes(self.folder)
            window_chunks = min(len(sizes), SHUFFLE_WINDOW // max(1, min(sizes)) + 2)
            self.reader = StreamingDataset(str(self.folder), max_pre_download=window_chunks, batch_decode=0)
        return self.reader

    def __getitem__(self, pair: tuple[int, int]) -> tuple[np.ndarray, int, int]:
        index, epoch = pair
        chunk = int(np.searchsorted(self.chunk_ends, index, side="right"))
        if chunk not in self.verified:
            self.verify(self.folder / self.chunks[chunk])
            self.verified.add(chunk)
        try:
            sample = self.open()[index]
        except Exception as error:  # litdata reading a chunk it cannot make sense of
            raise ConfigError(f"sample {index} of {self.folder} cannot be read ({error}); prepare it again") from None
        what = f"sample {sample['index']} of {self.folder}"
        if self.augment:
            pixels = self.augmented(decoded_array(sample["image"], self.mode, what), hash((self.seed, epoch, index)))
        else:
            image = decoded(bytes(sample["image"]), self.mode, what)
            if self.size and image.size != (self.size[1], self.size[0]):
                image = image.resize((self.size[1], self.size[0]), Image.Resampling.BILINEAR)  # as in memory
            pixels = as_array(image)
        return pixels, int(sample["label"]), int(sample["index"])

    def verify(self, path: Path) -> None:
        expected = self.digests.get(path.name)
        if expected is not None and sha256_of(path) != expected:
            raise ConfigError(f"shard {path} is damaged (not as prepared); restore it, or prepare the dataset again")

    def __getitems__(self, pairs: list[tuple[int, int]]) -> list[tuple[np.ndarray, int, int]]:
        return [self[pair] for pair in pairs]

    def augmented(self, pixels: np.ndarray, seed: int) -> np.ndarray:
        """The random resized crop (torchvision's RandomResizedCrop box) and random flip of uint8 (H, W, C) pixels,
        drawn from `seed` alone -> uint8 (H, W, C).

        A crop shrunk 1.5-fold or more is resized as torchvision resizes it (antialiased bilinear), where plain
        bilinear starts to alias. Any other by OpenCV's bilinear, as albumentations resizes: within one level of
        torchvision's when enlarging (where antialiasing does nothing), and within about a level on average when
        shrinking less (every pixel still counts), at a quarter of the cost of torch's resize and its return to
        (H, W, C) order."""
        draw = random.Random(seed)
        height, width = pixels.shape[0], pixels.shape[1]
        size = self.size or (height, width)
        top, left, crop_height, crop_width = crop_box(draw, height, width, self.crop_scale)
        crop = pixels[top : top + crop_height, left : left + crop_width]  # a view
        cv2 = opencv()
        if 2 * crop_height >= 3 * size[0] or 2 * crop_width >= 3 * size[1]:
            channels_last = torch.from_numpy(crop).permute(2, 0, 1).unsqueeze(0)  # torch's fast uint8 layout
            planes = torch.nn.functional.interpolate(channels_last, size=size, mode="bilinear", antialias=True)[0]
            resized = np.ascontiguousarray(planes.numpy().transpose(1, 2, 0))
        else:
            resized = cv2.resize(crop, (size[1], size[0]), interpolation=cv2.INTER_LINEAR)
        if self.hflip and draw.random() < 0.5:
            resized = cv2.flip(resized, 1)
        return resized.reshape(size[0], size[1], -1)  # cv2 drops a single channel


@functools.cache
def opencv() -> Any:
    """OpenCV, set to resize in the calling thread: a worker resizes one small image at a time, on its share
    of the cores, where OpenCV's thread pool only adds hand-offs."""
    import cv2

    cv2.setNumThreads(1)
    return cv2


def crop_box(
    draw: random.Random,
    height: int,
    width: int,
    scale: tuple[float, float],
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
) -> tuple[int, int, int, int]:
    """(top, left, height, width) of a random crop of area `scale` of the image's and aspect `ratio`: torchvision's
    `RandomResizedCrop.get_params`, step for step (ten tries, then the central crop), drawn from Python's
    generator. A quarter of its cost, where it makes a tensor for every draw from the global generator."""
    area, log_ratio = height * width, (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target_area = area * draw.uniform(scale[0], scale[1])
        aspect = math.exp(draw.uniform(*log_ratio))
        crop_width, crop_height = round(math.sqrt(target_area * aspect)), round(math.sqrt(target_area / aspect))
        if 0 < crop_width <= width and 0 < crop_height <= height:
            return draw.randint(0, height - crop_height), draw.randint(0, width - crop_width), crop_height, crop_width
    in_ratio = width / height
    if in_ratio < min(ratio):
        crop_width, crop_height = width, round(width / min(ratio))
    elif in_ratio > max(ratio):
        crop_width, crop_height = round(height * max(ratio)), height
    else:
        crop_width, crop_height = width, height
    return (height - crop_height) // 2, (width - crop_width) // 2, crop_height, crop_width


def decoded_array(data: Any, mode: str, what: str) -> np.ndarray:
    """Stored image bytes -> uint8 (H, W, C) in `mode`. JPEGs by simplejpeg (libjpeg-turbo straight into an
    array: the same pixels as PIL's, in half the time; torchvision's decoders are deprecated), other formats by
    PIL."""
    data = bytes(data)
    try:
        if data[:3] == b"\xff\xd8\xff":
            import simplejpeg

            array = simplejpeg.decode_jpeg(data, colorspace="GRAY" if mode == "L" else "RGB")
        else:
            array = np.asarray(decoded(data, mode, what))
    except ValueError as error:  # simplejpeg's word for a damaged JPEG
        raise ConfigError(f"{what} cannot be decoded ({error}); prepare the dataset again") from None
    return as_array(array)


def decoded(data: bytes, mode: str, what: str) -> Image.Image:
    """The stored image, decoded whole (as `predict` decodes a file), in `mode`."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            return image.convert(mode)
    except UNREADABLE as error:
        raise ConfigError(f"{what} cannot be decoded ({error}); prepare the dataset again") from None


def as_array(image: Image.Image | np.ndarray) -> np.ndarray:
    """A PIL image or decoded (H, W) or (H, W, C) pixels -> uint8 (H, W, C)."""
    array = np.asarray(image, dtype=np.uint8)
    return array.reshape(array.shape[0], array.shape[1], -1)


def collate(samples: list[tuple[np.ndarray, int, int]]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Samples of uint8 (H, W, C) pixels -> images uint8 (B, C, H, W) stored channels-last, labels (B,), sample ids
    (B,).

    The pixels are stacked in the order decoders and resizers write them: torch's copy into channels-first order
    costs 30 us an image, a tenth of all a worker does for it, where the normalisation in the training process
    writes its channels-first float batch from either order at the same cost. In a worker the batch is stacked
    straight into shared memory, as torch's default_collate does: it then crosses to the training process
    without another copy."""
    pixels, labels, ids = zip(*samples, strict=True)
    shape = (len(pixels), *pixels[0].shape)
    if get_worker_info() is not None:
        storage = torch.UntypedStorage._new_shared(int(np.prod(shape)))
        images = torch.empty(0, dtype=torch.uint8).set_(storage).view(shape)
    else:
        images = torch.empty(shape, dtype=torch.uint8)
    np.stack(pixels, out=images.numpy())
    return images.permute(0, 3, 1, 2), torch.tensor(labels), torch.tensor(ids)
