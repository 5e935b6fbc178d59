"""`ImageDataModule`: built-in image datasets and the user's image folders, held in memory as uint8 tensors.

Batches leave the loader as uint8 (4x less to copy to a GPU) and are converted, normalised and augmented
on the device in `on_after_batch_transfer`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import torch

from datamodules.augment import random_crop, random_hflip
from datamodules.image_folder import class_names, image_for_model, image_shape, load_image_folder
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
from validation import ConfigError, check_range

DatasetName = Literal["fashion_mnist", "mnist", "cifar10", "digits", "folder"]
BUILTIN_SHAPES = {  # (C, H, W), number of classes
    "fashion_mnist": ((1, 28, 28), 10),
    "mnist": ((1, 28, 28), 10),
    "cifar10": ((3, 32, 32), 10),
    "digits": ((1, 8, 8), 10),
}


def split_off(split: Split, fraction: float, generator: torch.Generator) -> tuple[Split, Split]:
    """Randomly move `fraction` of a split's samples into a new split: (rest, taken)."""
    images, labels = split
    order = torch.randperm(len(labels), generator=generator)
    taken, rest = order[: round(fraction * len(labels))], order[round(fraction * len(labels)) :]
    return (images[rest], labels[rest]), (images[taken], labels[taken])


class ImageDataModule(InMemoryDataModule):
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
    """

    model_facts = ("image_shape", "num_classes")
    input_kind = "images"

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
    ) -> None:
        super().__init__()
        check_range("batch_size", batch_size, 1)
        check_range("val_fraction", val_fraction, 0.0, 0.5, low_open=True)
        check_range("test_fraction", test_fraction, 0.0, 0.5, low_open=True)
        check_range("crop_padding", crop_padding, 0)
        if image_size is not None:
            check_range("image_size", image_size, 1)
        if dataset == "folder" and not data_dir:
            raise ConfigError("dataset 'folder' needs --data.data_dir pointing to a folder of class sub-folders")
        self.save_hyperparameters(logger=False)  # the tracker gets the whole nested config instead
        self.dataset = dataset
        self.data_dir = data_dir
        self.batch_size = batch_size
        self.splits: dict[str, Split] = {}
        self.classes: list[str] = []
        self.mean = self.std = torch.zeros(0)
        self.normalisers: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}
        self.stored_shape: tuple[int, int, int] | None = None  # from a checkpoint, whose folder may be gone

    # What a model must know, available before any image is loaded (facts the command gives the model).
    @property
    def image_shape(self) -> tuple[int, int, int]:
        if self.stored_shape:
            return self.stored_shape
        if self.dataset == "folder":
            return image_shape(Path(str(self.data_dir)), self.hparams["image_size"])
        return BUILTIN_SHAPES[self.dataset][0]

    @property
    def num_classes(self) -> int:
        if self.classes:
            return len(self.classes)
        if self.dataset == "folder":
            return len(class_names(Path(str(self.data_dir))))
        return BUILTIN_SHAPES[self.dataset][1]

    def prepare_data(self) -> None:
        """Find (or download) the data, so a missing dataset is reported before training starts."""
        if self.dataset in ("fashion_mnist", "mnist"):
            locate_mnist_like(self.dataset, self.data_dir)
        elif self.dataset == "cifar10":
            locate_cifar10(self.data_dir)
        elif self.dataset == "folder":
            image_shape(Path(str(self.data_dir)), self.hparams["image_size"])

    def load_source(self) -> ImageSource:
        if self.dataset in ("fashion_mnist", "mnist"):
            return load_mnist_like(self.dataset, self.data_dir)
        if self.dataset == "cifar10":
            return load_cifar10(self.data_dir)
        if self.dataset == "digits":
            return load_digits()
        return load_image_folder(Path(str(self.data_dir)), self.hparams["image_size"])

    def setup(self, stage: str | None = None) -> None:
        if self.splits:  # loaded once, whatever the stage
            return
        source = self.load_source()
        generator = torch.Generator().manual_seed(self.hparams["seed"])
        train, test = source.train, source.test
        if test is None:
            train, test = split_off(train, self.hparams["test_fraction"], generator)
        val = source.val
        if val is None:
            train, val = split_off(train, self.hparams["val_fraction"], generator)
        self.splits = {"train": train, "val": val, "test": test}
        self.classes = source.classes
        # Normalisation statistics come from the training images only, per channel.
        pixels = train[0].transpose(0, 1).reshape(train[0].shape[1], -1)  # (C, N*H*W)
        self.mean = torch.stack([channel.float().mean() for channel in pixels]).view(1, -1, 1, 1) / 255
        self.std = torch.stack([channel.float().std() for channel in pixels]).view(1, -1, 1, 1) / 255

    def prepare_batch(self, batch: Any, training: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """uint8 images (B, C, H, W) -> normalised float32 images, augmented while training."""
        images, labels = batch
        if training and self.hparams["augment"]:  # on the uint8 pixels: zero padding is black either way
            if self.hparams["crop_padding"]:
                images = random_crop(images, self.hparams["crop_padding"])
            if self.hparams["hflip"]:
                images = random_hflip(images)
        scale, shift = self.normaliser(images.device)
        # (x / 255 - mean) / std as one fused multiply-add that also converts to float: fewer kernel launches,
        # which add up inside a training step (python -m benchmarks.overhead).
        return torch.addcmul(shift, images, scale), labels

    def normaliser(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """(scale, shift) of shape (1, C, 1, 1) with (x / 255 - mean) / std = x * scale + shift, on `device`."""
        if device not in self.normalisers:
            self.normalisers[device] = (1 / (255 * self.std)).to(device), (-self.mean / self.std).to(device)
        return self.normalisers[device]

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
