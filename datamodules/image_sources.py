"""Where image datasets come from: each loader returns uint8 tensors (N, C, H, W) and int64 labels (N,).

Sources work offline: Fashion-MNIST from Debian's `dataset-fashion-mnist` package, the 8x8 digits bundled
with scikit-learn, and the user's own image folders. torchvision downloads are used only when a dataset is
not found on disk and the network is reachable.
"""

from __future__ import annotations

import gzip
import pickle
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from datamodules.cache import cache_dir
from validation import ConfigError

DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")

Split = tuple[torch.Tensor, torch.Tensor]  # images uint8 (N, C, H, W), labels int64 (N,)


@dataclass
class ImageSource:
    """The splits a source provides; a missing split is carved out of `train` by the datamodule."""

    train: Split
    classes: list[str]
    test: Split | None = None
    val: Split | None = None


def read_idx(path: Path) -> torch.Tensor:
    """Read an IDX file (the MNIST format), gzipped or not, into a uint8 tensor of its stored shape."""
    with (gzip.open if path.suffix == ".gz" else open)(path, "rb") as file:
        data = file.read()
    dtype_code, ndim = data[2], data[3]
    if data[:2] != b"\x00\x00" or dtype_code != 0x08:
        raise ConfigError(f"{path} is not an IDX file of unsigned bytes; replace it with the original file")
    shape = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    return torch.frombuffer(bytearray(data[4 + 4 * ndim :]), dtype=torch.uint8).reshape(shape)


def find_idx(directories: list[Path], stem: str) -> Path | None:
    for directory in directories:
        for name in (stem, stem + ".gz"):
            if (directory / name).is_file():
                return directory / name
    return None


MNIST_CLASSES = {
    "mnist": [str(digit) for digit in range(10)],
    "fashion_mnist": [
        "T-shirt/top",
        "Trouser",
        "Pullover",
        "Dress",
        "Coat",
        "Sandal",
        "Shirt",
        "Sneaker",
        "Bag",
        "Ankle boot",
    ],
}


MNIST_FILES = [
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
]


def locate_mnist_like(name: str, data_dir: str | None) -> list[Path]:
    """The four IDX files of MNIST or Fashion-MNIST: in data_dir, in torchvision's layout under it, in
    Debian's package (Fashion-MNIST), else downloaded by torchvision into data_dir (or the cache)."""
    root = Path(data_dir) if data_dir else cache_dir()
    places = [root, root / ("FashionMNIST" if name == "fashion_mnist" else "MNIST") / "raw"]
    if name == "fashion_mnist":
        places.append(DEBIAN_FASHION_MNIST)
    if find_idx(places, MNIST_FILES[0]) is None:
        download_torchvision(name, root, places)
    paths = [find_idx(places, stem) for stem in MNIST_FILES]
    missing = [stem for stem, path in zip(MNIST_FILES, paths, strict=True) if path is None]
    if missing:
        raise ConfigError(f"{name}: {', '.join(missing)} missing in {', '.join(map(str, places))}; add them")
    return [path for path in paths if path]


def load_mnist_like(name: str, data_dir: str | None) -> ImageSource:
    train_images, train_labels, test_images, test_labels = map(read_idx, locate_mnist_like(name, data_dir))
    return ImageSource(
        train=(train_images.unsqueeze(1), train_labels.long()),
        test=(test_images.unsqueeze(1), test_labels.long()),
        classes=MNIST_CLASSES[name],
    )


def download_torchvision(name: str, root: Path, places: list[Path]) -> None:
    """Fetch a dataset with torchvision into `root`, or say where it was looked for and how to provide it."""
    import torchvision

    dataset_class = {
        "mnist": torchvision.datasets.MNIST,
        "fashion_mnist": torchvision.datasets.FashionMNIST,
        "cifar10": torchvision.datasets.CIFAR10,
    }[name]
    hint = " (or `apt-get install dataset-fashion-mnist`)" if name == "fashion_mnist" else ""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            dataset_class(root=str(root), train=True, download=True)
            dataset_class(root=str(root), train=False, download=True)
    except Exception as error:  # no network, a proxy, a full disk: all end in the same advice
        looked = ", ".join(map(str, places))
        raise ConfigError(
            f"{name} not found (looked in {looked}) and the download failed ({type(error).__name__}); "
            f"put the files in --data.data_dir{hint}"
        ) from None


def locate_cifar10(data_dir: str | None) -> Path:
    root = Path(data_dir) if data_dir else cache_dir()
    if not (root / "cifar-10-batches-py").is_dir():
        download_torchvision("cifar10", root, [root / "cifar-10-batches-py"])
    return root


def load_cifar10(data_dir: str | None) -> ImageSource:
    """CIFAR-10 from its Python pickles (torchvision's download format), read directly."""
    folder = locate_cifar10(data_dir) / "cifar-10-batches-py"
    splits = []
    for names in ([f"data_batch_{i}" for i in range(1, 6)], ["test_batch"]):
        batches = [unpickle(folder / name) for name in names]
        images = np.concatenate([batch["data"] for batch in batches]).reshape(-1, 3, 32, 32)  # rows are CHW
        labels = np.concatenate([batch["labels"] for batch in batches])
        splits.append((torch.from_numpy(images).contiguous(), torch.from_numpy(labels).long()))
    classes = unpickle(folder / "batches.meta")["label_names"]
    names = [name.decode() if isinstance(name, bytes) else str(name) for name in classes]
    return ImageSource(train=splits[0], test=splits[1], classes=names)


def unpickle(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"{path} is missing; put the whole cifar-10-batches-py folder in --data.data_dir")
    with path.open("rb") as file:
        return {key.decode(): value for key, value in pickle.load(file, encoding="bytes").items()}


def load_digits() -> ImageSource:
    """scikit-learn's 1,797 handwritten digits, 8x8 pixels of 17 grey levels (0-16), scaled to 0-255."""
    from sklearn.datasets import load_digits as sklearn_digits

    bunch = sklearn_digits()
    images = torch.from_numpy(np.rint(bunch.images * (255 / 16)).astype(np.uint8)).unsqueeze(1)  # (N, 1, 8, 8)
    return ImageSource(train=(images, torch.from_numpy(bunch.target).long()), classes=[str(d) for d in range(10)])
