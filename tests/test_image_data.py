"""Image data on real datasets and on user folders: splits, shapes, batching, normalisation, augmentation."""

from __future__ import annotations

import gzip
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from datamodules.augment import random_crop, random_erase, random_hflip
from datamodules.batches import ShardedOrder, tensor_batches
from datamodules.image import ImageDataModule, split_off
from datamodules.image_sources import DEBIAN_FASHION_MNIST, load_mnist_like
from tests.helpers import write_images
from validation import ConfigError


def rows(images: torch.Tensor) -> list[bytes]:
    return sorted(image.numpy().tobytes() for image in images)


def test_digits_splits_partition_the_dataset() -> None:
    datamodule = ImageDataModule(dataset="digits", val_fraction=0.1, test_fraction=0.2, seed=3)
    datamodule.setup()
    sizes = {name: len(labels) for name, (_, labels) in datamodule.splits.items()}
    assert sizes == {"train": 1294, "val": 144, "test": 359}
    for images, labels in datamodule.splits.values():
        assert images.dtype == torch.uint8 and images.shape[1:] == (1, 8, 8)
        assert labels.dtype == torch.long and set(labels.tolist()) <= set(range(10))
    # Every image lands in exactly one split: the union is the dataset, with nothing repeated or lost.
    everything = torch.cat([images for images, _ in datamodule.splits.values()])
    whole = load_digits_images()
    assert rows(everything) == rows(whole)
    assert datamodule.image_shape == (1, 8, 8) and datamodule.num_classes == 10


def load_digits_images() -> torch.Tensor:
    from datamodules.image_sources import load_digits

    return load_digits().train[0]


def test_split_off_is_disjoint_and_seeded() -> None:
    ids = torch.arange(100)
    split = (ids.view(100, 1, 1, 1), ids)
    (rest, taken) = split_off(split, 0.25, torch.Generator().manual_seed(0))
    assert len(taken[1]) == 25 and len(rest[1]) == 75
    assert set(taken[1].tolist()).isdisjoint(rest[1].tolist())
    again = split_off(split, 0.25, torch.Generator().manual_seed(0))[1][1]
    other = split_off(split, 0.25, torch.Generator().manual_seed(1))[1][1]
    assert torch.equal(taken[1], again) and not torch.equal(taken[1], other)


@pytest.mark.skipif(not DEBIAN_FASHION_MNIST.is_dir(), reason="needs Debian's dataset-fashion-mnist (installed by CI)")
def test_fashion_mnist_from_the_debian_package(tmp_path: Path) -> None:
    source = load_mnist_like("fashion_mnist", str(tmp_path))  # an empty data_dir falls back to the package
    assert source.train[0].shape == (60000, 1, 28, 28) and source.test[0].shape == (10000, 1, 28, 28)
    assert torch.bincount(source.train[1]).tolist() == [6000] * 10
    assert torch.bincount(source.test[1]).tolist() == [1000] * 10
    assert source.classes[0] == "T-shirt/top" and len(source.classes) == 10


def test_batches_cover_each_epoch_and_reshuffle() -> None:
    ids = torch.arange(10)
    order = ShardedOrder(10, shuffle=True, seed=0)
    batches = tensor_batches((ids,), batch_size=4, sampler=order)
    assert len(batches) == 3
    first = [batch[0] for batch in batches]
    assert [len(b) for b in first] == [4, 4, 2]
    assert sorted(torch.cat(first).tolist()) == list(range(10))
    assert torch.equal(torch.cat(first), torch.cat([b[0] for b in batches]))  # same epoch, same order
    order.set_epoch(1)
    assert not torch.equal(torch.cat(first), torch.cat([b[0] for b in batches]))
    dropping = tensor_batches((ids,), batch_size=4, sampler=order, drop_last=True)
    assert len(dropping) == 2 and all(len(b[0]) == 4 for b in dropping)


def test_ranks_get_disjoint_shards_of_the_same_epoch() -> None:
    shards = [ShardedOrder(11, shuffle=True, seed=5, rank=rank, world_size=2) for rank in range(2)]
    for shard in shards:
        shard.set_epoch(3)
    first, second = (shard.indices().tolist() for shard in shards)
    assert set(first).isdisjoint(second) and sorted(first + second) == list(range(11))
    assert (len(shards[0]), len(shards[1])) == (6, 5)


def test_normalisation_is_fitted_on_training_images() -> None:
    datamodule = ImageDataModule(dataset="digits")
    datamodule.setup()
    images, _ = datamodule.on_after_batch_transfer(datamodule.splits["train"], 0)
    assert images.dtype == torch.float32
    assert images.mean().item() == pytest.approx(0.0, abs=1e-4)
    assert images.std().item() == pytest.approx(1.0, abs=1e-3)


def test_random_crop_shifts_each_image_by_at_most_the_padding() -> None:
    torch.manual_seed(0)
    images = torch.zeros(200, 1, 9, 9)
    images[:, :, 4, 4] = 1.0  # one bright pixel in the centre
    assert torch.equal(random_crop(images, 0), images)
    cropped = random_crop(images, 2)
    assert cropped.shape == images.shape
    positions = cropped.view(200, -1).argmax(-1)
    rows_, cols = positions // 9, positions % 9
    assert rows_.min() == 2 and rows_.max() == 6 and cols.min() == 2 and cols.max() == 6
    assert len({(r, c) for r, c in zip(rows_.tolist(), cols.tolist(), strict=True)}) > 15


def test_random_hflip_mirrors_about_half() -> None:
    torch.manual_seed(0)
    images = torch.arange(4.0).view(1, 1, 1, 4).repeat(400, 1, 1, 1)
    flipped = random_hflip(images)
    mirrored = (flipped == images.flip(-1)).view(400, -1).all(-1)
    unchanged = (flipped == images).view(400, -1).all(-1)
    assert (mirrored ^ unchanged).all()
    assert 150 < mirrored.sum().item() < 250


def test_image_folder_loads_labels_and_skips_corrupt_files(tmp_path: Path) -> None:
    write_images(tmp_path, {"cat": 10, "dog": 200}, count=10)
    (tmp_path / "dog" / "broken.png").write_bytes(b"not an image")
    datamodule = ImageDataModule(dataset="folder", data_dir=str(tmp_path), val_fraction=0.2, test_fraction=0.2)
    assert datamodule.image_shape == (3, 5, 6) and datamodule.num_classes == 2
    with pytest.warns(UserWarning, match=r"skipping unreadable image .*broken\.png"):
        datamodule.setup()
    assert datamodule.classes == ["cat", "dog"]
    images = torch.cat([split[0] for split in datamodule.splits.values()])
    labels = torch.cat([split[1] for split in datamodule.splits.values()])
    assert images.shape == (20, 3, 5, 6)
    # The label follows the folder: cats are dark (10..19), dogs bright (200..209).
    assert torch.equal(labels, (images[:, 0, 0, 0] >= 200).long())


def test_image_folder_with_train_and_test_folders(tmp_path: Path) -> None:
    write_images(tmp_path / "train", {"a": 0, "b": 100}, count=6)
    write_images(tmp_path / "test", {"a": 0, "b": 100}, count=2)
    datamodule = ImageDataModule(dataset="folder", data_dir=str(tmp_path), val_fraction=0.5)
    datamodule.setup()
    assert {name: len(split[1]) for name, split in datamodule.splits.items()} == {
        "train": 6,
        "val": 6,
        "test": 4,
    }


def test_image_folder_resizes_on_request(tmp_path: Path) -> None:
    write_images(tmp_path, {"a": 0}, count=2, size=(6, 5))
    write_images(tmp_path, {"b": 50}, count=2, size=(8, 8))
    with pytest.raises(ConfigError, match=r"different sizes.*set --data\.image_size"):
        ImageDataModule(dataset="folder", data_dir=str(tmp_path)).setup()
    datamodule = ImageDataModule(dataset="folder", data_dir=str(tmp_path), image_size=4, test_fraction=0.25)
    datamodule.setup()
    assert datamodule.splits["train"][0].shape[1:] == (3, 4, 4)


@pytest.mark.parametrize(
    ("layout", "message"),
    [
        ("missing", "does not exist"),
        ("empty", r"needs one sub-folder per class \(at least 2\), found 0"),
        ("no_images", "no images found"),
        ("different_classes", "differ from those of the training folder"),
    ],
)
def test_bad_image_folders_are_clear_errors(tmp_path: Path, layout: str, message: str) -> None:
    root = tmp_path / "data"
    if layout == "empty":
        root.mkdir()
    elif layout == "no_images":
        (root / "a").mkdir(parents=True)
        (root / "b").mkdir()
        (root / "b" / "notes.txt").write_text("no image here")
    elif layout == "different_classes":
        write_images(root / "train", {"a": 0, "b": 100}, count=2)
        write_images(root / "test", {"a": 0, "c": 100}, count=2)

    def load() -> None:
        datamodule = ImageDataModule(dataset="folder", data_dir=str(root))
        datamodule.prepare_data()
        datamodule.setup()

    with pytest.raises(ConfigError, match=message):
        load()


def test_folder_needs_a_data_dir() -> None:
    with pytest.raises(ConfigError, match=r"needs --data\.data_dir"):
        ImageDataModule(dataset="folder")


def write_idx(path: Path, array: np.ndarray) -> None:
    """An IDX file of unsigned bytes: magic 0x0000 0x08 <ndim>, big-endian sizes, then the data."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(size.to_bytes(4, "big") for size in array.shape)
    with gzip.open(path, "wb") as file:
        file.write(header + array.astype(np.uint8).tobytes())


def test_mnist_in_torchvision_layout(tmp_path: Path) -> None:
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    train, test = rng.integers(0, 256, (30, 28, 28)), rng.integers(0, 256, (10, 28, 28))
    write_idx(raw / "train-images-idx3-ubyte.gz", train)
    write_idx(raw / "train-labels-idx1-ubyte.gz", np.arange(30) % 10)
    write_idx(raw / "t10k-images-idx3-ubyte.gz", test)
    write_idx(raw / "t10k-labels-idx1-ubyte.gz", np.arange(10))
    datamodule = ImageDataModule(dataset="mnist", data_dir=str(tmp_path), val_fraction=0.2)
    datamodule.prepare_data()
    datamodule.setup()
    assert torch.equal(datamodule.splits["test"][0][:, 0], torch.from_numpy(test).to(torch.uint8))
    assert torch.equal(datamodule.splits["test"][1], torch.arange(10))
    assert len(datamodule.splits["train"][1]) == 24 and len(datamodule.splits["val"][1]) == 6


def test_cifar10_pickles(tmp_path: Path) -> None:
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {b"data": rng.integers(0, 256, (4, 3072), dtype=np.uint8), b"labels": [0, 1, 2, 9]}
        (folder / name).write_bytes(pickle.dumps(batch))
    meta = {b"label_names": [f"c{i}".encode() for i in range(10)]}
    (folder / "batches.meta").write_bytes(pickle.dumps(meta))
    datamodule = ImageDataModule(dataset="cifar10", data_dir=str(tmp_path), val_fraction=0.25)
    datamodule.setup()
    test_images, test_labels = datamodule.splits["test"]
    expected = pickle.loads((folder / "test_batch").read_bytes())[b"data"].reshape(4, 3, 32, 32)
    assert torch.equal(test_images, torch.from_numpy(expected)) and test_labels.tolist() == [0, 1, 2, 9]
    assert len(datamodule.splits["train"][1]) == 15 and datamodule.classes[9] == "c9"
    assert datamodule.image_shape == (3, 32, 32)


def test_random_erase_blacks_out_one_rectangle_in_about_its_share_of_the_images() -> None:
    torch.manual_seed(0)
    images = torch.full((400, 3, 12, 10), 7.0)
    erased = random_erase(images, probability=0.5)
    assert torch.equal(random_erase(images, probability=0.0), images)
    zero = erased == 0
    assert torch.equal(zero, zero[:, :1].expand_as(zero))  # every channel of a pixel together
    touched = zero.view(400, -1).any(-1)
    assert 160 < int(touched.sum()) < 240
    for mask in zero[touched, 0]:  # one solid rectangle of 2-33% of the image
        rows, cols = mask.any(1).nonzero().flatten(), mask.any(0).nonzero().flatten()
        box = mask[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
        assert box.all() and int(mask.sum()) == box.numel()
        assert 1 <= box.numel() <= 0.4 * 120
    assert len({tuple(m.nonzero()[0].tolist()) for m in zero[touched, 0]}) > 20  # each image its own place
    assert (erased[~touched] == 7).all()
