"""Where image datasets come from: each loader returns uint8 tensors (N, C, H, W) and int64 labels (N,).

Sources work offline: Fashion-MNIST from Debian's `dataset-fashion-mnist` package, the 8x8 digits bundled
with scikit-learn, and the user's own image folders. torchvision downloads are used only when a dataset is
not found on disk and the network is reachable.
"""

from __future__ import annotations

import gzip
import math
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
    try:
        with (gzip.open if path.suffix == ".gz" else open)(path, "rb") as file:
            data = file.read()
    except (OSError, EOFError) as error:  # a damaged or truncated gzip, a file we may not read
        raise ConfigError(f"{path} cannot be read ({error}); replace it with the original file") from None
    if len(data) < 4 or data[:2] != b"\x00\x00" or data[2] != 0x08:
        raise ConfigError(f"{path} is not an IDX file of unsigned bytes; replace it with the original file")
    ndim = data[3]
    shape = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    body = data[4 + 4 * ndim :]
    if len(data) < 4 + 4 * ndim or len(body) != math.prod(shape):
        raise ConfigError(
            f"{path} holds {len(body)} bytes of data where its header promises {math.prod(shape)} (truncated?); "
            "replace it with the original file"
        )
    return torch.frombuffer(bytearray(body), dtype=torch.uint8).reshape(shape)


def labelled(images: torch.Tensor, labels: torch.Tensor, classes: list[str], where: Path) -> Split:
    """A split of a dataset's files, checked: as many labels as images, each naming one of the classes."""
    if len(images) != len(labels):
        raise ConfigError(f"{where} has {len(images)} images but {len(labels)} labels; replace its files")
    if len(labels) and not 0 <= int(labels.min()) <= int(labels.max()) < len(classes):
        raise ConfigError(f"{where} has labels outside 0-{len(classes) - 1}; replace its files")
    return images, labels.long()


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
    paths = locate_mnist_like(name, data_dir)
    train_images, train_labels, test_images, test_labels = map(read_idx, paths)
    for path, images in ((paths[0], train_images), (paths[2], test_images)):
        if images.dim() != 3:
            raise ConfigError(f"{path} holds no images (N, H, W); replace it with the original file")
    classes = MNIST_CLASSES[name]
    return ImageSource(
        train=labelled(train_images.unsqueeze(1), train_labels, classes, paths[1]),
        test=labelled(test_images.unsqueeze(1), test_labels, classes, paths[3]),
        classes=classes,
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
    classes = [name.decode() if isinstance(name, bytes) else str(name) for name in cifar_part(folder, "batches.meta")]
    splits = []
    for names in ([f"data_batch_{i}" for i in range(1, 6)], ["test_batch"]):
        parts = [cifar_part(folder, name) for name in names]
        images = np.concatenate([data for data, _ in parts]).reshape(-1, 3, 32, 32)  # rows are CHW
        labels = torch.from_numpy(np.concatenate([labels for _, labels in parts]))
        splits.append(labelled(torch.from_numpy(images).contiguous(), labels, classes, folder / names[-1]))
    return ImageSource(train=splits[0], test=splits[1], classes=classes)


# The functions a CIFAR-10 pickle (or any numpy array's) calls; `PlainUnpickler` refuses every other.
PICKLE_GLOBALS = frozenset(
    {
        ("numpy.core.multiarray", "_reconstruct"),  # numpy 1's name, in the original files
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.numeric", "_frombuffer"),  # protocol 5
        ("numpy._core.numeric", "_frombuffer"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),  # bytes pickled with protocol 2
    }
)


class PlainUnpickler(pickle.Unpickler):
    """Unpickles plain data and numpy arrays only: a pickle is a program, and a data_dir's files may come
    from anywhere, so a planted one must not run code."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in PICKLE_GLOBALS:
            raise ConfigError(f"it asks to run {module}.{name}, which no data file needs")
        return super().find_class(module, name)


def cifar_part(folder: Path, name: str) -> Any:
    """A batch's (data (N, 3072) uint8, labels (N,)), or the class names of "batches.meta"."""
    path = folder / name
    if not path.is_file():
        raise ConfigError(f"{path} is missing; put the whole cifar-10-batches-py folder in --data.data_dir")
    try:
        with path.open("rb") as file:
            content = {key.decode(): value for key, value in PlainUnpickler(file, encoding="bytes").load().items()}
        if name == "batches.meta":
            return list(content["label_names"])
        data, labels = np.asarray(content["data"]), np.asarray(content["labels"], dtype=np.int64)
    except Exception as error:  # garbage in a pickle can raise almost anything
        raise ConfigError(f"{path} is not a CIFAR-10 file ({error}); replace it with the original file") from None
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise ConfigError(f"{path} holds no 32x32 colour images in bytes; replace it with the original file")
    return data, labels


def load_digits() -> ImageSource:
    """scikit-learn's 1,797 handwritten digits, 8x8 pixels of 17 grey levels (0-16), scaled to 0-255."""
    from sklearn.datasets import load_digits as sklearn_digits

    bunch = sklearn_digits()
    images = torch.from_numpy(np.rint(bunch.images * (255 / 16)).astype(np.uint8)).unsqueeze(1)  # (N, 1, 8, 8)
    return ImageSource(train=(images, torch.from_numpy(bunch.target).long()), classes=[str(d) for d in range(10)])
