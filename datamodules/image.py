"""`ImageDataModule`: built-in image datasets and the user's image folders, held in memory as uint8 tensors,
or streamed from prepared shards when a folder is too big for memory.

Batches leave the loader as uint8 (4x less to copy to a GPU) and are converted and normalised on the device
in `on_after_batch_transfer`; in memory they are augmented there too, as whole batches; streamed, each image
is augmented at its real resolution in the DataLoader workers that decode it.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property, partial
from pathlib import Path
from typing import Any, Literal

import torch

from datamodules.augment import random_crop, random_erase, random_hflip
from datamodules.batches import batches_done
from datamodules.cache import cache_dir
from datamodules.image_folder import class_names, image_for_model, image_shape, load_image_folder, split_dirs
from datamodules.image_shards import KIND, ShardImages, chunk_sizes, collate, prepare_images
from datamodules.image_sources import (
    ImageSource,
    Split,
    load_cifar10,
    load_digits,
    load_mnist_like,
    locate_cifar10,
    locate_mnist_like,
)
from datamodules.in_memory import InMemoryDataModule
from datamodules.prepared import Manifest, fingerprint, is_prepared, read_manifest
from datamodules.streaming import (
    ChunkedOrder,
    StreamingBatches,
    StreamsWhenPrepared,
    available_memory,
    default_workers,
    fits_in_memory,
    memory_note,
    processes_per_machine,
    streaming_reason,
)
from validation import ConfigError, check_range


@dataclass(frozen=True)
class BuiltinImages:
    """A built-in image dataset: what a model learns of it before any image is loaded, and where it comes from."""

    shape: tuple[int, int, int]  # (C, H, W)
    num_classes: int
    load: Callable[[str | None], ImageSource]  # data_dir -> its splits
    locate: Callable[[str | None], object] | None = None  # data_dir -> its files, found or downloaded; None: bundled


BUILTIN_DATASETS = {
    "fashion_mnist": BuiltinImages(
        shape=(1, 28, 28),
        num_classes=10,
        load=partial(load_mnist_like, "fashion_mnist"),
        locate=partial(locate_mnist_like, "fashion_mnist"),
    ),
    "mnist": BuiltinImages(
        shape=(1, 28, 28),
        num_classes=10,
        load=partial(load_mnist_like, "mnist"),
        locate=partial(locate_mnist_like, "mnist"),
    ),
    "cifar10": BuiltinImages(shape=(3, 32, 32), num_classes=10, load=load_cifar10, locate=locate_cifar10),
    "digits": BuiltinImages(shape=(1, 8, 8), num_classes=10, load=lambda data_dir: load_digits()),  # in scikit-learn
}
# The names the command accepts (a Literal, for jsonargparse's choices): the built-in datasets, then "folder".
DatasetName = Literal["fashion_mnist", "mnist", "cifar10", "digits", "folder"]
Loading = Literal["auto", "memory", "streaming"]
# Peak memory of the in-memory path per byte of decoded images: the decoded list, the uint8 tensor, and the
# float copies of the statistics (measured: about 400 KB of peak for each 160 px colour image of 77 KB).
IN_MEMORY_OVERHEAD = 5


def split_off(split: Split, fraction: float, generator: torch.Generator) -> tuple[Split, Split]:
    """Randomly move `fraction` of a split's samples into a new split: (rest, taken)."""
    images, labels = split
    order = torch.randperm(len(labels), generator=generator)
    taken, rest = order[: round(fraction * len(labels))], order[round(fraction * len(labels)) :]
    return (images[rest], labels[rest]), (images[taken], labels[taken])


def stratified_subset(split: Split, size: int, generator: torch.Generator) -> Split:
    """`size` samples of a split drawn at random, each class in its share of the split (largest remainders
    get the samples that rounding leaves), in a random order."""
    images, labels = split
    if size > len(labels):
        raise ConfigError(f"--data.train_labels {size} is more than the {len(labels)} training images")
    classes, counts = torch.unique(labels, return_counts=True)
    if size < len(classes):
        raise ConfigError(
            f"--data.train_labels {size} is fewer than the {len(classes)} classes; give at least one each"
        )
    shares = counts.double() * size / len(labels)
    taken = shares.floor().long()
    remainders = (shares - taken).argsort(descending=True, stable=True)
    taken[remainders[: size - int(taken.sum())]] += 1
    chosen = [
        members[torch.randperm(len(members), generator=generator)[:count]]
        for label, count in zip(classes.tolist(), taken.tolist(), strict=True)
        for members in [torch.nonzero(labels == label).flatten()]
    ]
    order = torch.cat(chosen)[torch.randperm(size, generator=generator)]
    return images[order], labels[order]


class ImageDataModule(StreamsWhenPrepared, InMemoryDataModule):
    """Image classification data.

    Args:
        dataset: "fashion_mnist" (60k/10k), "mnist", "cifar10", "digits" (scikit-learn's 8x8 digits, offline)
            or "folder" (your images in data_dir, one sub-folder per class).
        data_dir: where the dataset's files are (or go, when downloaded); required for "folder".
        batch_size: training batch size; evaluation uses batches 4x larger (no gradients to keep).
        val_fraction: share of the training data held out for validation, when the source has no val split.
        test_fraction: share held out for testing, when the source has no test split (digits, plain folders).
        seed: seed of the train/val/test split and of the shuffling order.
        augment: random crop (with `crop_padding`) and, if `hflip`, horizontal flips of training images.
        crop_padding: pixels of zero padding for the random crop.
        hflip: flip training images left-right at random (right for photos, wrong for digits).
        image_size: resize a folder's images to image_size x image_size (needed when their sizes differ).
        loading: how a folder's images reach training. "memory": decoded once into memory (the fast path for
            small data; built-in datasets always). "streaming": from prepared shards, decoded and augmented in
            DataLoader workers, each rank its own part, memory flat whatever the size; `data_dir` is either a
            folder prepared by `python -m experiments.prepare` or a raw folder, prepared on first use into the
            cache. "auto": a prepared folder streams; a raw one streams when the in-memory path would need
            more than half of the memory available to each process; the start note says which and why.
        workers: DataLoader worker processes per training process when streaming (default: the CPUs of the
            process shared among the processes of the machine, at most 8).
        crop_scale: when streaming with `augment`, the range of the area of a random crop, as a share of the
            image, resized to image_size (torchvision's RandomResizedCrop) in place of the padded crop.
        standardize: standardise pixels with the training split's mean and standard deviation per channel;
            false: only scale them to [0, 1], for a core that normalises images itself (a pretrained backbone,
            with the statistics of the data it was trained on).
        train_labels: train on only this many of the training images, the same share of each class, chosen
            with `seed` (e.g. 600, 1% of Fashion-MNIST, to see what pretrained weights bring where labels are
            few); validation and test splits stay whole.
        erase: the chance that a training image has a random rectangle (2-33% of it) blacked out, its own
            for each image (random erasing, Zhong et al. 2020): it teaches a model to use every part of an
            object, where few labels let it lean on one. 0: never.
    """

    model_facts = ("image_shape", "num_classes")
    optional_facts = ("standardized",)
    input_kind = "images"
    eval_batch_factor = 4  # as InMemoryDataModule's evaluation batches

    def __init__(
        self,
        dataset: DatasetName = "fashion_mnist",
        data_dir: str | None = None,
        batch_size: int = 128,
        val_fraction: float = 0.1,
        test_fraction: float = 0.2,
        seed: int = 0,
        augment: bool = False,
        crop_padding: int = 2,
        hflip: bool = False,
        image_size: int | None = None,
        loading: Loading = "auto",
        workers: int | None = None,
        crop_scale: tuple[float, float] = (0.08, 1.0),
        standardize: bool = True,
        train_labels: int | None = None,
        erase: float = 0.0,
    ) -> None:
        super().__init__()
        check_range("batch_size", batch_size, 1)
        check_range("val_fraction", val_fraction, 0.0, 0.5, low_open=True)
        check_range("test_fraction", test_fraction, 0.0, 0.5, low_open=True)
        check_range("crop_padding", crop_padding, 0)
        check_range("erase", erase, 0.0, 1.0)
        if image_size is not None:
            check_range("image_size", image_size, 1)
        if dataset == "folder" and not data_dir:
            raise ConfigError("dataset 'folder' needs --data.data_dir pointing to a folder of class sub-folders")
        if loading == "streaming" and dataset != "folder":
            raise ConfigError(f"dataset {dataset!r} is held in memory; --data.loading streaming takes a folder")
        if workers is not None:
            check_range("workers", workers, 0)
        if train_labels is not None:
            check_range("train_labels", train_labels, 1)
            if dataset == "folder" and loading == "streaming":
                raise ConfigError("--data.train_labels takes data held in memory; leave out --data.loading streaming")
        if not 0 < crop_scale[0] <= crop_scale[1] <= 1:
            raise ConfigError(f"crop_scale must be two shares 0 < low <= high <= 1 of the image area, got {crop_scale}")
        self.save_hyperparameters(logger=False)  # the tracker gets the whole nested config instead
        self.dataset = dataset
        self.data_dir = data_dir
        self.batch_size = batch_size
        self.splits: dict[str, Split] = {}
        self.classes: list[str] = []
        self.mean = self.std = torch.zeros(0)
        self.normalisers: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}
        self.stored_shape: tuple[int, int, int] | None = None  # from a checkpoint, whose folder may be gone
        self.manifest: Manifest | None = None  # of the shards, when streaming
        self.loading_reason = ""

    # What a model must know, available before any image is loaded (facts the command gives the model).
    @property
    def image_shape(self) -> tuple[int, int, int]:
        if self.stored_shape:
            return self.stored_shape
        if self.shards is not None:
            return self.streamed_shape()
        if self.dataset == "folder":
            return image_shape(Path(str(self.data_dir)), self.hparams["image_size"])
        return BUILTIN_DATASETS[self.dataset].shape

    @property
    def standardized(self) -> bool:
        """Whether the model's images are standardised per channel, or only scaled to [0, 1]."""
        return bool(self.hparams["standardize"])

    @property
    def num_classes(self) -> int:
        if self.classes:
            return len(self.classes)
        if self.shards is not None:
            return len(self.opened_manifest().state["classes"])
        if self.dataset == "folder":
            return len(class_names(Path(str(self.data_dir))))
        return BUILTIN_DATASETS[self.dataset].num_classes

    def prepare_data(self) -> None:
        """Find (or download) the data, so a missing dataset is reported before training starts."""
        builtin = BUILTIN_DATASETS.get(self.dataset)
        if builtin is not None and builtin.locate is not None:
            builtin.locate(self.data_dir)
        elif self.shards is not None:
            self.opened_manifest()
        elif self.dataset == "folder":
            image_shape(Path(str(self.data_dir)), self.hparams["image_size"])

    def load_source(self) -> ImageSource:
        if self.dataset in BUILTIN_DATASETS:
            return BUILTIN_DATASETS[self.dataset].load(self.data_dir)
        return load_image_folder(Path(str(self.data_dir)), self.hparams["image_size"])

    def setup(self, stage: str | None = None) -> None:
        if self.splits:  # loaded once, whatever the stage
            return
        if self.shards is not None:
            state = self.opened_manifest().state
            if self.hparams["train_labels"] is not None:
                raise ConfigError("--data.train_labels takes data held in memory; a prepared folder streams")
            self.classes = list(state["classes"])
            self.mean = torch.tensor(state["mean"]).view(1, -1, 1, 1)
            self.std = torch.tensor(state["std"]).view(1, -1, 1, 1)
            self.unstandardized()
            return
        source = self.load_source()
        generator = torch.Generator().manual_seed(self.hparams["seed"])
        train, test = source.train, source.test
        if test is None:
            train, test = split_off(train, self.hparams["test_fraction"], generator)
        val = source.val
        if val is None:
            train, val = split_off(train, self.hparams["val_fraction"], generator)
        if self.hparams["train_labels"] is not None:
            train = stratified_subset(train, self.hparams["train_labels"], generator)
        self.splits = {"train": train, "val": val, "test": test}
        self.classes = source.classes
        # Normalisation statistics come from the training images only, per channel.
        pixels = train[0].transpose(0, 1).reshape(train[0].shape[1], -1)  # (C, N*H*W)
        self.mean = torch.stack([channel.float().mean() for channel in pixels]).view(1, -1, 1, 1) / 255
        self.std = torch.stack([channel.float().std() for channel in pixels]).view(1, -1, 1, 1) / 255
        self.unstandardized()

    def unstandardized(self) -> None:
        """Without `standardize`, pixels are only scaled to [0, 1]: mean 0 and standard deviation 1."""
        if not self.hparams["standardize"]:
            self.mean, self.std = torch.zeros_like(self.mean), torch.ones_like(self.std)

    def prepare_batch(self, batch: Any, training: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """uint8 images (B, C, H, W) -> normalised float32 images, augmented while training."""
        images, labels = batch[0], batch[1]  # streamed batches also carry the sample ids
        if (
            training and self.hparams["augment"] and self.shards is None
        ):  # on the uint8 pixels: zero padding is black either way
            if self.hparams["crop_padding"]:
                images = random_crop(images, self.hparams["crop_padding"])
            if self.hparams["hflip"]:
                images = random_hflip(images)
        if training and self.hparams["erase"]:  # (streamed batches too: after their workers' crops and flips)
            images = random_erase(images, self.hparams["erase"])
        scale, shift = self.normaliser(images.device)
        # (x / 255 - mean) / std as one fused multiply-add that also converts to float: fewer kernel launches,
        # which add up inside a training step (python -m benchmarks.overhead). Written channels-first whatever
        # the order of the pixels (streamed batches are stored channels-last), at the cost of a contiguous read.
        normalised = torch.empty(images.shape, device=images.device)
        return torch.addcmul(shift, images, scale, out=normalised), labels

    def normaliser(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """(scale, shift) of shape (1, C, 1, 1) with (x / 255 - mean) / std = x * scale + shift, on `device`."""
        if device not in self.normalisers:
            self.normalisers[device] = (1 / (255 * self.std)).to(device), (-self.mean / self.std).to(device)
        return self.normalisers[device]

    # Streaming from prepared shards.
    @cached_property
    def shards(self) -> Path | None:
        """The prepared folder to stream from, or None to hold the data in memory (see `loading`); a raw folder
        chosen for streaming is prepared into the cache here, once."""
        loading = self.hparams["loading"]
        if self.dataset != "folder" or loading == "memory":
            if is_prepared(self.data_dir):
                fix = "leave out --data.loading memory" if self.dataset == "folder" else "give --data.dataset folder"
                raise ConfigError(f"{self.data_dir} is a prepared dataset, which streams; {fix}")
            self.loading_reason = "in memory" if self.dataset == "folder" else "in memory (built-in)"
            return None
        folder = Path(str(self.data_dir))
        if is_prepared(folder):
            self.loading_reason = "streaming: a prepared folder"
            return folder
        needed, available = self.in_memory_bytes(folder), available_memory()
        per_process = available // processes_per_machine()
        if loading == "auto" and fits_in_memory(needed, per_process):
            self.loading_reason = f"in memory: {memory_note(needed, per_process)}"
            return None
        self.loading_reason = streaming_reason(loading, needed, per_process)
        return self.prepared_in_cache(folder)

    def in_memory_bytes(self, folder: Path) -> int:
        """Peak memory the in-memory path would take for this folder: files x decoded size x overhead."""
        files = sum(len(names) for split in split_dirs(folder).values() for _, _, names in os.walk(split))
        channels, height, width = image_shape(folder, self.hparams["image_size"])
        return files * channels * height * width * IN_MEMORY_OVERHEAD

    def prepared_in_cache(self, folder: Path) -> Path:
        """The cache's prepared copy of `folder` for these split settings, made on first use (one process
        prepares while the others of the machine wait for it)."""
        hp = self.hparams
        key = f"{folder.resolve()}:{fingerprint(folder)}:{hp['val_fraction']}:{hp['test_fraction']}:{hp['seed']}"
        target = cache_dir() / "prepared" / f"{folder.name}-{hashlib.sha256(key.encode()).hexdigest()[:12]}"
        target.parent.mkdir(parents=True, exist_ok=True)
        with open(target.with_suffix(".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not is_prepared(target):
                print(f"preparing {folder} as shards in {target} (once)", file=sys.stderr, flush=True)
                prepare_images(
                    folder,
                    target,
                    val_fraction=hp["val_fraction"],
                    test_fraction=hp["test_fraction"],
                    seed=hp["seed"],
                    workers=default_workers(None),
                )
        return target

    def opened_manifest(self) -> Manifest:
        if self.manifest is None:
            assert self.shards is not None
            self.manifest = read_manifest(self.shards, KIND)
        return self.manifest

    def streamed_shape(self) -> tuple[int, int, int]:
        state = self.opened_manifest().state
        size = self.hparams["image_size"]
        if size is None and state["size"] is None:
            raise ConfigError(
                f"the images of {self.shards} differ in size; set --data.image_size to resize them all to one size"
            )
        height, width = (size, size) if size else state["size"]
        return (state["channels"], height, width)

    def prepared_dataset(self) -> Path | None:
        return self.shards

    def loading_note(self) -> str:
        shards = self.shards
        if shards is None:
            return f"data: {self.loading_reason}"
        workers = self.workers()
        return f"data: {self.loading_reason}; from {shards}, {workers} DataLoader worker(s) per process"

    def workers(self) -> int:
        given = self.hparams["workers"]
        return default_workers(self.trainer) if given is None else given

    def streaming_loader(self, split: str, batch_size: int, training: bool) -> StreamingBatches:
        assert self.shards is not None
        self.setup("fit")
        hp, trainer = self.hparams, self.trainer
        folder = self.shards / split
        rank, world_size = (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)
        order = ChunkedOrder(
            chunk_sizes(folder),
            batch_size,
            shuffle=training,
            equal_batches=training,
            seed=hp["seed"],
            rank=rank,
            world_size=world_size,
        )
        channels, height, width = self.image_shape
        dataset = ShardImages(
            folder,
            channels,
            (height, width),
            augment=training and hp["augment"],
            hflip=hp["hflip"],
            crop_scale=tuple(hp["crop_scale"]),
            seed=hp["seed"],
            digests={
                name.split("/", 1)[1]: digest
                for name, digest in self.opened_manifest().digests.items()
                if name.startswith(f"{split}/")
            },
        )
        loader = StreamingBatches(dataset, order, collate, self.workers())
        if training:
            loader.progress = batches_done(trainer)  # resumable mid-epoch
        return loader

    def inference_state(self) -> dict[str, Any]:
        return {
            "classes": self.classes,
            "image_shape": list(self.image_shape),
            "mean": self.mean.flatten().tolist(),
            "std": self.std.flatten().tolist(),
        }

    def load_inference_state(self, state: dict[str, Any]) -> None:
        self.classes = list(state["classes"])
        self.stored_shape = (state["image_shape"][0], state["image_shape"][1], state["image_shape"][2])
        self.mean = torch.tensor(state["mean"]).view(1, -1, 1, 1)
        self.std = torch.tensor(state["std"]).view(1, -1, 1, 1)

    def encode_inputs(self, items: list[Path]) -> torch.Tensor:
        """Image files of this model's size and channels (resized if it was trained on resized images) ->
        normalised images (B, C, H, W)."""
        resize = self.hparams["image_size"] is not None
        images = torch.stack([image_for_model(path, self.image_shape, resize) for path in items])
        return self.prepare_batch((images, None), training=False)[0]
