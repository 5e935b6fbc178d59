"""The user's own images: one sub-folder per class, decoded once into memory.

Layouts:  root/<class>/<image>            (train/val/test are split from it by the datamodule)
          root/train/<class>/<image>, optional root/val/... and root/test/...
Unreadable images are skipped with a warning that names each file.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from datamodules.image_sources import IMAGE_EXTENSIONS, ImageSource, Split
from validation import ConfigError

GREY_MODES = {"1", "L", "LA", "I", "I;16", "F"}


def split_dirs(root: Path) -> dict[str, Path]:
    """{"train": ..., "val"?: ..., "test"?: ...} for the split layout, else {"train": root}."""
    if not root.is_dir():
        raise ConfigError(f"data_dir {root} does not exist; point --data.data_dir to a folder of class sub-folders")
    if (root / "train").is_dir():
        return {split: root / split for split in ("train", "val", "test") if (root / split).is_dir()}
    return {"train": root}


def class_names(root: Path) -> list[str]:
    """The classes of an image folder: the sub-folders of its training part, sorted; the val and test parts,
    if any, must have the same ones."""
    splits = split_dirs(root)
    train = splits["train"]
    classes = sub_folders(train)
    if len(classes) < 2:
        raise ConfigError(
            f"{train} needs one sub-folder per class (at least 2), found {len(classes)}; "
            "arrange images as <data_dir>/<class>/<image>"
        )
    for folder in splits.values():
        if (present := sub_folders(folder)) != classes:
            raise ConfigError(
                f"the classes of {folder} ({', '.join(present)}) differ from those of the training folder "
                f"({', '.join(classes)}); give every split the same class sub-folders"
            )
    return classes


def sub_folders(folder: Path) -> list[str]:
    return sorted(entry.name for entry in folder.iterdir() if entry.is_dir() and not entry.name.startswith("."))


def image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())


def open_images(folder: Path, classes: list[str]) -> tuple[list[Image.Image], list[int]]:
    images, labels = [], []
    for label, name in enumerate(classes):
        for path in image_files(folder / name):
            try:
                with Image.open(path) as image:
                    image.load()
                    images.append(image.copy())
            except (UnidentifiedImageError, OSError, SyntaxError) as error:
                warnings.warn(f"skipping unreadable image {path}: {error}", stacklevel=2)
                continue
            labels.append(label)
    return images, labels


def image_shape(root: Path, image_size: int | None) -> tuple[int, int, int]:
    """(C, H, W) the loaded images will have, from the first readable training image."""
    train = split_dirs(root)["train"]
    for name in class_names(root):
        for path in image_files(train / name):
            try:
                with Image.open(path) as image:
                    channels = 1 if image.mode in GREY_MODES else 3
                    width, height = image.size
            except (UnidentifiedImageError, OSError, SyntaxError):
                continue
            return (channels, image_size, image_size) if image_size else (channels, height, width)
    raise ConfigError(f"no images found in {train}; supported types: {', '.join(IMAGE_EXTENSIONS)}")


def to_tensor(
    images: list[Image.Image], labels: list[int], shape: tuple[int, int, int], resize: bool, where: Path
) -> Split:
    """Convert to the shape's mode; resize to it only when the user asked for an image_size."""
    channels, height, width = shape
    mode = "L" if channels == 1 else "RGB"
    arrays = []
    for image in images:
        image = image.convert(mode)
        if image.size != (width, height):
            if not resize:
                raise ConfigError(
                    f"images in {where} have different sizes ({image.size[0]}x{image.size[1]} and "
                    f"{width}x{height}); set --data.image_size to resize them all to one size"
                )
            image = image.resize((width, height), Image.Resampling.BILINEAR)
        arrays.append(np.asarray(image, dtype=np.uint8).reshape(height, width, channels))
    stacked = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()  # (N, H, W, C) -> (N, C, H, W)
    return stacked, torch.tensor(labels, dtype=torch.long)


def load_image_folder(root: Path, image_size: int | None) -> ImageSource:
    classes = class_names(root)
    shape = image_shape(root, image_size)
    splits: dict[str, Split] = {}
    for split, folder in split_dirs(root).items():
        images, labels = open_images(folder, classes)
        if not images:
            raise ConfigError(f"no readable images in {folder}; supported types: {', '.join(IMAGE_EXTENSIONS)}")
        splits[split] = to_tensor(images, labels, shape, image_size is not None, folder)
    return ImageSource(train=splits["train"], val=splits.get("val"), test=splits.get("test"), classes=classes)
