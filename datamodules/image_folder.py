"""The user's own images: one sub-folder per class, decoded once into memory.

Layouts:  root/<class>/<image>            (train/val/test are split from it by the datamodule)
          root/train/<class>/<image>, optional root/val/... and root/test/...
Unreadable images are skipped with a warning that names each file. Images are read as 8-bit: 16-bit grey
ones are scaled down (not clipped), and floating-point ones refused, as their range is unknown.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from datamodules.image_sources import IMAGE_EXTENSIONS, ImageSource, Split
from validation import ConfigError

# What PIL raises for a file it cannot decode; a decompression bomb (more pixels than PIL's
# MAX_IMAGE_PIXELS, a huge image from a tiny file) counts as one, its warning made an error in `read_image`.
UNREADABLE = (
    UnidentifiedImageError,
    OSError,
    SyntaxError,
    Image.DecompressionBombError,
    Image.DecompressionBombWarning,
)


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
    """The image files under a class folder, sorted. A link to a file is followed wherever it points (the
    folder is the user's own); a link to a folder is not entered (one to a parent would loop, or bring in
    another class's images) and is named in a warning; a link to nothing is kept, to be reported unreadable."""
    files = []
    for path in sorted(folder.rglob("*")):
        if path.is_dir() and path.is_symlink():
            warnings.warn(f"not following {path}, a link to a folder; link its images one by one", stacklevel=2)
        elif path.suffix.lower() in IMAGE_EXTENSIONS and (path.is_file() or not path.exists()):
            files.append(path)
    return files


def read_image(path: Path) -> Image.Image:
    """The decoded image, 8-bit (see `eight_bit`); raises one of UNREADABLE if PIL cannot decode it."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        with Image.open(path) as image:
            image.load()
            copy = image.copy()
            copy.format = image.format  # what the file holds ("JPEG", "PNG", ...): a copy would say None
            return eight_bit(copy, path)


def eight_bit(image: Image.Image, path: Path) -> Image.Image:
    """The image in a mode of 8 bits per channel: 16-bit grey ("I;16", "I;16B", ..., and "I", as which some
    Pillows open 16-bit PNGs) scaled from 0-65535 to 0-255 by v / 257, rounded, so a 16-bit copy of an 8-bit
    image comes back exact (`convert("L")` would clip every value above 255 to 255)."""
    if image.mode == "F":
        raise ConfigError(f"{path} has floating-point pixels, of unknown range; save it as an 8- or 16-bit image")
    if not image.mode.startswith("I"):
        return image
    pixels = np.asarray(image).astype(np.int64)  # (H, W)
    if pixels.min() < 0 or pixels.max() > 65535:
        raise ConfigError(
            f"{path} has pixel values outside 0-65535 ({pixels.min()} to {pixels.max()}); "
            "save it as an 8- or 16-bit image"
        )
    return Image.fromarray(((pixels + 128) // 257).astype(np.uint8))


def open_images(folder: Path, classes: list[str]) -> tuple[list[Image.Image], list[int]]:
    images, labels = [], []
    for label, name in enumerate(classes):
        for path in image_files(folder / name):
            try:
                images.append(read_image(path))
            except UNREADABLE as error:
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
                image = read_image(path)
            except UNREADABLE:
                continue
            channels = 1 if Image.getmodebase(image.mode) == "L" else 3  # grey (with alpha) or colour
            width, height = image.size
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


def image_for_model(path: Path, shape: tuple[int, int, int], resize: bool) -> torch.Tensor:
    """One image file -> uint8 (C, H, W) of a model's `shape`; resized only if `resize` (the model was trained
    on resized images), never converted between grey and colour (a model of one learnt nothing of the other)."""
    try:
        image = read_image(path)
    except UNREADABLE as error:
        raise ConfigError(
            f"{path} cannot be read as an image ({error}); give a PNG, JPEG, BMP, GIF or TIFF file"
        ) from None
    channels, height, width = shape
    kinds = {1: "grey", 3: "colour"}
    found = 1 if Image.getmodebase(image.mode) == "L" else 3
    if found != channels:
        raise ConfigError(
            f"{path} is a {kinds[found]} image; this model takes {kinds.get(channels, channels)} images "
            f"({channels} channel(s)): convert it first"
        )
    if image.size != (width, height) and not resize:
        raise ConfigError(
            f"{path} is {image.size[0]}x{image.size[1]} pixels; this model takes {width}x{height} images: "
            "resize it first"
        )
    return to_tensor([image], [0], shape, resize, path)[0][0]


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
