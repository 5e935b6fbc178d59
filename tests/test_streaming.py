"""Streaming images from prepared shards: the epoch order, prepare (resumable, checked), the datamodule's
batches against the in-memory path's, and real runs: streaming chosen, DDP sharing, exact resume."""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

import datamodules.image_shards as image_shards
from benchmarks.jpeg_folder import make_jpeg_folder
from datamodules.image import ImageDataModule
from datamodules.image_shards import prepare_images
from datamodules.prepared import MANIFEST, read_manifest
from datamodules.streaming import ChunkedOrder
from tests.helpers import REPO, history, run_cli, run_module, wandb_records, write_images
from validation import ConfigError


@pytest.mark.parametrize("world_size", [1, 2, 3])
@pytest.mark.parametrize(("sizes", "batch_size"), [([40, 40, 17], 8), ([5, 100, 3, 64], 16), ([30], 32), ([9], 2)])
def test_each_epoch_every_sample_once_across_ranks_in_equal_batch_counts(
    sizes: list[int], batch_size: int, world_size: int
) -> None:
    for epoch in (0, 1):
        seen: list[int] = []
        counts = []
        for rank in range(world_size):
            order = ChunkedOrder(
                sizes, batch_size, shuffle=True, equal_batches=True, seed=5, rank=rank, world_size=world_size, window=20
            )
            order.set_epoch(epoch)
            batches = order.batches()
            assert len(batches) == len(order)
            assert all(len(batch) == batch_size for batch in batches[:-1])
            assert 0 < len(batches[-1]) < 2 * batch_size + world_size  # the rank's remainder joins its last batch
            counts.append(len(batches))
            seen += torch.cat(batches).tolist()
        assert sorted(seen) == list(range(sum(sizes)))  # every sample once, none dropped, none repeated
        assert len(set(counts)) == 1  # DDP needs every rank to take the same number of steps


def test_the_order_changes_with_the_epoch_reads_chunks_in_runs_and_repeats_for_the_same_seed() -> None:
    def order(seed: int, epoch: int) -> list[int]:
        chunked = ChunkedOrder([100] * 10, 10, shuffle=True, equal_batches=True, seed=seed, window=200)
        chunked.set_epoch(epoch)
        return torch.cat(chunked.batches()).tolist()

    assert order(0, 1) == order(0, 1) and order(0, 1) != order(0, 2) and order(0, 1) != order(1, 1)
    first_window = order(0, 1)[:200]
    assert len({index // 100 for index in first_window}) == 2  # two chunks at a time, mixed
    evaluation = ChunkedOrder([100] * 10, 64, shuffle=False, equal_batches=False, rank=1, world_size=2)
    assert torch.cat(evaluation.batches()).tolist() == list(range(500, 1000))  # consecutive, the last batch short


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """120 JPEGs of 24 px in 4 classes, split into train/val/test folders (so both paths split alike)."""
    source = make_jpeg_folder(tmp_path_factory.mktemp("jpegs") / "all", 120, size=24, classes=4)
    root = tmp_path_factory.mktemp("split") / "photos"
    for path in sorted(source.rglob("*.jpg")):
        number = int(path.stem)
        split = "test" if number % 5 == 0 else "val" if number % 5 == 1 else "train"
        (root / split / path.parent.name).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, root / split / path.parent.name / path.name)
    return root


@pytest.fixture(scope="module")
def prepared(folder: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    output = tmp_path_factory.mktemp("prepared") / "photos"
    prepare_images(folder, output, workers=2, progress=False)
    return output


def test_prepare_records_the_split_classes_and_the_exact_statistics_of_the_training_images(
    folder: Path, prepared: Path
) -> None:
    manifest = read_manifest(prepared, "images")
    assert manifest.splits == {"train": 72, "val": 24, "test": 24}
    in_memory = ImageDataModule(dataset="folder", data_dir=str(folder), loading="memory")
    in_memory.setup()
    assert manifest.state["classes"] == in_memory.classes == ["class_00", "class_01", "class_02", "class_03"]
    assert manifest.state["size"] == [24, 24] and manifest.state["channels"] == 3
    np.testing.assert_allclose(manifest.state["mean"], in_memory.mean.flatten().numpy(), atol=1e-6)
    np.testing.assert_allclose(manifest.state["std"], in_memory.std.flatten().numpy(), atol=1e-6)
    # JPEGs are stored as the bytes of their files, untouched (not decoded and encoded again).
    from litdata import StreamingDataset

    listing = image_shards.list_images(folder, 0.1, 0.2, seed=0)["train"]
    for sample in StreamingDataset(str(prepared / "train"))[:5]:
        assert bytes(sample["image"]) == Path(listing[sample["index"]][0]).read_bytes()


def test_streamed_batches_hold_the_same_images_as_the_in_memory_path(folder: Path, prepared: Path) -> None:
    streamed = ImageDataModule(dataset="folder", data_dir=str(prepared), batch_size=8, workers=0)
    in_memory = ImageDataModule(dataset="folder", data_dir=str(folder), batch_size=8, loading="memory")
    assert streamed.facts() == in_memory.facts() == {"image_shape": (3, 24, 24), "num_classes": 4, "standardized": True}
    for split in ("val_dataloader", "test_dataloader"):
        streamed_images = torch.cat([batch[0] for batch in getattr(streamed, split)()])
        memory_images = torch.cat([batch[0] for batch in getattr(in_memory, split)()])
        # The same uint8 images, in another order (the shards hold them shuffled).
        assert sorted(map(bytes, streamed_images.flatten(1).numpy())) == sorted(
            map(bytes, memory_images.flatten(1).numpy())
        )
    batch = next(iter(streamed.val_dataloader()))
    normalised = streamed.prepare_batch(batch, training=False)[0]
    assert torch.allclose(normalised, in_memory.prepare_batch((batch[0], batch[1]), training=False)[0], atol=1e-5)


@pytest.mark.parametrize("shape", [(160, 120), (1, 1000), (1000, 1), (5, 7)])
def test_the_crop_boxes_are_drawn_as_torchvisions_random_resized_crop_draws_them(shape: tuple[int, int]) -> None:
    """Same algorithm, other generator: the boxes' distributions agree, and the central crop that follows ten
    failed tries (an image far from square) is torchvision's exactly."""
    import random
    import statistics

    from torchvision.transforms import v2

    ours, theirs = [], []
    for seed in range(1000):
        ours.append(image_shards.crop_box(random.Random(seed), *shape, (0.08, 1.0)))
        torch.manual_seed(seed)
        theirs.append(v2.RandomResizedCrop.get_params(torch.empty(3, *shape), [0.08, 1.0], [3 / 4, 4 / 3]))
    for part, extent in enumerate((shape[0], shape[1], shape[0], shape[1])):  # top, left, height, width
        mine, torchvisions = statistics.mean(b[part] for b in ours), statistics.mean(b[part] for b in theirs)
        assert abs(mine - torchvisions) <= 0.03 * extent
    for top, left, height, width in ours:
        assert 0 <= top <= shape[0] - height and 0 <= left <= shape[1] - width and height > 0 and width > 0


@pytest.mark.parametrize("size", [(96, 80), (48, 50), (20, 24)])  # enlarging, shrinking a little, and more
def test_streamed_crops_are_resized_as_torchvision_resizes_them(size: tuple[int, int], prepared: Path) -> None:
    """The streamed crop against torchvision's `resized_crop` of the same box: within one level where the crop is
    enlarged, within 1.5 levels on average where it is shrunk less than 1.5-fold (plain bilinear; about 1 on this
    fractal, the hardest case), and exactly torchvision's (antialiased) where it is shrunk further. Flips are
    exact mirror images."""
    import random

    from PIL import Image
    from torchvision.transforms.v2 import functional

    fractal = np.asarray(Image.effect_mandelbrot((64, 56), (-2.0, -1.2, 0.8, 1.2), 100), dtype=np.uint8)
    pixels = np.ascontiguousarray(np.stack([fractal, fractal[::-1], 255 - fractal], axis=-1))  # (56, 64, 3)
    dataset = image_shards.ShardImages(prepared / "train", 3, size, augment=True)
    differences = []
    for seed in range(200):
        top, left, height, width = image_shards.crop_box(random.Random(seed), 56, 64, (0.08, 1.0))
        ours = torch.from_numpy(dataset.augmented(pixels, seed)).permute(2, 0, 1).int()
        as_chw = torch.from_numpy(pixels).permute(2, 0, 1)
        theirs = functional.resized_crop(as_chw, top, left, height, width, list(size), antialias=True).int()
        difference = (ours - theirs).abs()
        if 2 * height >= 3 * size[0] or 2 * width >= 3 * size[1]:
            assert difference.max() == 0
        elif height <= size[0] and width <= size[1]:
            assert difference.max() <= 1
        else:
            differences.append(difference.float().mean().item())
    assert not differences or np.mean(differences) <= 1.5
    flipping = image_shards.ShardImages(prepared / "train", 3, size, augment=True, hflip=True)
    flips = [
        np.array_equal(flipping.augmented(pixels, seed), dataset.augmented(pixels, seed)[:, ::-1]) for seed in range(40)
    ]
    assert 5 <= sum(flips) <= 35  # the rest unflipped
    assert all(
        flip or np.array_equal(flipping.augmented(pixels, seed), dataset.augmented(pixels, seed))
        for seed, flip in enumerate(flips)
    )


def test_the_training_loader_with_workers_covers_each_sample_once_and_resumes_where_it_stopped(prepared: Path) -> None:
    data = ImageDataModule(
        dataset="folder", data_dir=str(prepared), batch_size=16, workers=2, augment=True, hflip=True, image_size=20
    )
    loader = data.train_dataloader()
    loader.sampler.set_epoch(3)
    batches = list(loader)
    assert [len(b[2]) for b in batches] == [16, 16, 16, 24]  # 72 samples: the remainder joins the last batch
    assert sorted(torch.cat([b[2] for b in batches]).tolist()) == list(range(72))
    assert batches[0][0].shape == (16, 3, 20, 20) and batches[0][0].dtype == torch.uint8  # cropped, resized
    loader.progress = lambda: 2
    state = loader.state_dict()
    resumed = ImageDataModule(
        dataset="folder", data_dir=str(prepared), batch_size=16, workers=1, augment=True, hflip=True, image_size=20
    ).train_dataloader()
    resumed.load_state_dict(state)
    resumed.sampler.set_epoch(3)
    rest = list(resumed)
    assert len(rest) == 2
    for mine, theirs in zip(rest, batches[2:], strict=True):  # the same samples, augmented alike
        assert torch.equal(mine[2], theirs[2]) and torch.equal(mine[0], theirs[0])


@pytest.mark.slow
def test_a_stopped_prepare_goes_on_and_writes_the_same_shards(folder: Path, prepared: Path, tmp_path: Path) -> None:
    output = tmp_path / "again"
    real_write = image_shards.write_part
    calls = []

    def failing(*args: object) -> dict:
        calls.append(args[0])
        if len(calls) == 2:
            raise RuntimeError("a worker failed")  # the whole prepare stops
        return real_write(*args)  # type: ignore[arg-type]

    image_shards.write_part = failing
    try:
        with pytest.raises(RuntimeError, match="a worker failed"):
            prepare_images(folder, output, workers=1, progress=False)
    finally:
        image_shards.write_part = real_write
    assert not (output / MANIFEST).exists()
    with pytest.raises(ConfigError, match="its prepare did not finish"):
        read_manifest(output, "images")
    prepare_images(folder, output, workers=2, progress=False)
    for path in sorted(prepared.rglob("*")):
        if path.is_file() and path.name != MANIFEST:
            assert path.read_bytes() == (output / path.relative_to(prepared)).read_bytes(), path.name


def test_damaged_or_outdated_shards_are_refused_in_one_line(prepared: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(prepared, copy)
    chunk = sorted((copy / "train").glob("chunk-*.bin"))[0]
    chunk.write_bytes(chunk.read_bytes()[:-10])
    with pytest.raises(ConfigError, match=r"is .* bytes, .* when prepared \(truncated or replaced\)"):
        read_manifest(copy, "images")
    chunk.unlink()
    with pytest.raises(ConfigError, match="is missing; restore it, or prepare the dataset again"):
        read_manifest(copy, "images")
    manifest = json.loads((copy / MANIFEST).read_text())
    (copy / MANIFEST).write_text(json.dumps(manifest | {"version": 0}))
    with pytest.raises(ConfigError, match="prepared by another version of firstlight"):
        read_manifest(copy, "images")
    with pytest.raises(ConfigError, match="holds prepared images, not corpus"):
        read_manifest(prepared, "corpus")


def test_a_shard_damaged_in_place_stops_training_with_one_line(prepared: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(prepared, copy)
    chunk = sorted((copy / "train").glob("chunk-*.bin"))[0]
    data = bytearray(chunk.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte: the same size, so only its digest tells
    chunk.write_bytes(bytes(data))
    loader = ImageDataModule(dataset="folder", data_dir=str(copy), batch_size=8, workers=1).train_dataloader()
    with pytest.raises(ConfigError) as raised:
        next(iter(loader))
    assert str(raised.value) == (
        f"shard {chunk} is damaged (not as prepared); restore it, or prepare the dataset again"
    )


def test_a_changed_source_and_an_output_that_would_lose_files_are_refused(folder: Path, tmp_path: Path) -> None:
    source = tmp_path / "source"
    shutil.copytree(folder, source)
    output = tmp_path / "out"
    prepare_images(source, output, workers=1, progress=False)
    with pytest.raises(ConfigError, match="is already a prepared dataset; give --overwrite"):
        prepare_images(source, output, workers=1, progress=False)
    write_images(source / "train", {"class_00": 10}, 1)  # a new image
    with pytest.raises(ConfigError, match=r"has changed since .* was prepared from it"):
        read_manifest(output, "images")
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep")
    with pytest.raises(ConfigError, match="exists and is not a prepared dataset"):
        prepare_images(source, mine, workers=1, progress=False)
    assert (mine / "notes.txt").read_text() == "keep"


def test_the_prepare_command_reports_a_mistake_in_one_line(tmp_path: Path) -> None:
    result = run_module("experiments.prepare", str(tmp_path / "nowhere"), str(tmp_path / "out"), cwd=REPO)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"error: {tmp_path / 'nowhere'} not found; give an image folder or a text file to prepare"
    ]
    assert not (tmp_path / "out").exists()


def test_each_kind_is_prepared_with_the_split_its_datamodule_trains_with_by_default() -> None:
    import importlib
    import inspect

    from experiments.prepare import KINDS, READERS

    assert set(READERS) == set(KINDS)
    for class_path, val_fraction, test_fraction in READERS.values():
        module, _, name = class_path.rpartition(".")
        parameters = inspect.signature(getattr(importlib.import_module(module), name)).parameters
        assert (parameters["val_fraction"].default, parameters["test_fraction"].default) == (
            val_fraction,
            test_fraction,
        )


def test_a_folder_too_big_for_memory_streams_from_shards_prepared_in_the_cache(
    folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FIRSTLIGHT_DATA", str(tmp_path / "cache"))
    monkeypatch.setattr("datamodules.image.available_memory", lambda: 10_000)  # a machine with 10 KB to spare
    data = ImageDataModule(dataset="folder", data_dir=str(folder), batch_size=8, workers=0)
    assert data.facts() == {"image_shape": (3, 24, 24), "num_classes": 4, "standardized": True}
    assert data.shards is not None and data.shards.parent == tmp_path / "cache" / "prepared"
    note = data.loading_note()
    assert note.startswith("data: streaming: in memory it would take about") and "GB available" in note
    assert ImageDataModule(dataset="folder", data_dir=str(folder), loading="memory").shards is None


DDP_ARGS = ["--trainer.accelerator", "cpu", "--trainer.devices", "2", "--trainer.strategy", "ddp"]


def streaming_run(prepared: Path, *args: str) -> list[str]:
    return [
        "--config",
        "cnn_digits",
        "--data.dataset",
        "folder",
        "--data.data_dir",
        str(prepared),
        "--data.batch_size",
        "8",
        "--data.augment",
        "true",
        "--data.hflip",
        "true",
        "--model.net.channels",
        "[8,16]",
        *args,
    ]


@pytest.mark.slow
def test_two_ddp_processes_see_every_training_sample_once_per_epoch(prepared: Path, tmp_path: Path) -> None:
    record = ["--trainer.callbacks+=tests.sample_log.RecordSamples", f"--trainer.callbacks.folder={tmp_path}"]
    result = run_cli(*streaming_run(prepared, "--trainer.max_epochs", "2", *DDP_ARGS, *record), cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "data: streaming: a prepared folder" in result.stderr
    ranks = [json.loads((tmp_path / f"samples-rank{rank}.json").read_text()) for rank in (0, 1)]
    for epoch in ("0", "1"):
        per_rank = [[i for batch in rank[epoch] for i in batch] for rank in ranks]
        assert Counter(per_rank[0] + per_rank[1]) == Counter(range(72))  # every sample once across both ranks
        assert not set(per_rank[0]) & set(per_rank[1]) and len(ranks[0][epoch]) == len(ranks[1][epoch]) == 4
    # The run's input, logged once (by rank 0) as references to the prepared folder, not a copy of it.
    (run_dir,) = (tmp_path / "runs" / "cnn_digits").iterdir()
    artifacts = [r["artifact"] for r in wandb_records(run_dir) if r["type"] == "artifact"]
    (dataset,) = [a for a in artifacts if a["type"] == "dataset"]
    assert dataset["name"] == f"dataset-{prepared.name}" and dataset["metadata"]
    contents = dataset["manifest"]["contents"]
    assert {entry["ref"] for entry in contents} >= {f"file://{prepared / 'firstlight.json'}"}
    assert all(entry["ref"].startswith(f"file://{prepared}/") for entry in contents)


@pytest.mark.slow
def test_a_streaming_run_stopped_mid_epoch_resumes_to_the_uninterrupted_result(
    folder: Path, prepared: Path, tmp_path: Path
) -> None:
    """72 training images in batches of 8: 9 steps an epoch, 3 epochs; SIGTERM as step 22 starts, in the last
    epoch, with 2 workers decoding and augmenting at random. The resumed run ends as the uninterrupted one."""
    args = streaming_run(prepared, "--trainer.max_epochs", "3", "--model.net.dropout", "0.3")
    for name in ("reference", "stopped"):
        (tmp_path / name).mkdir()
    reference = run_cli(*args, cwd=tmp_path / "reference")
    assert reference.returncode == 0, reference.stderr[-3000:]
    stop = ["--trainer.callbacks+=tests.signals.SignalAt", "--trainer.callbacks.step=22"]
    stopped = run_cli(*args, *stop, cwd=tmp_path / "stopped")
    assert stopped.returncode == 143 and "Traceback" not in stopped.stderr, stopped.stderr[-3000:]
    (run_dir,) = (tmp_path / "stopped" / "runs" / "cnn_digits").iterdir()
    resumed = run_cli("--run.resume", str(run_dir), cwd=tmp_path / "stopped")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    (uninterrupted,) = (tmp_path / "reference" / "runs" / "cnn_digits").iterdir()
    summary, expected = (json.loads((d / "summary.json").read_text()) for d in (run_dir, uninterrupted))
    metrics = {name for name, value in expected.items() if isinstance(value, float)} - {"wall_time_s"}
    assert {"train/acc", "test/acc", "val/loss"} <= metrics <= set(summary)
    for name in metrics:
        assert summary[name] == pytest.approx(expected[name], abs=1e-6), name
    (steps, values), (expected_steps, expected_values) = (
        history(run_dir, "train/loss"),
        history(uninterrupted, "train/loss"),
    )
    assert steps == expected_steps and values == pytest.approx(expected_values, abs=1e-6)

    # The checkpoint alone predicts new image files as the model saw images in training: no shards needed.
    shutil.move(str(prepared), str(tmp_path / "moved"))
    try:
        images = [str(path) for path in sorted(folder.rglob("*.jpg"))[:2]]
        predicted = run_module("experiments.predict", str(run_dir), *images, cwd=tmp_path)
    finally:
        shutil.move(str(tmp_path / "moved"), str(prepared))
    assert predicted.returncode == 0, predicted.stderr[-2000:]
    rows = predicted.stdout.strip().splitlines()[1:]  # input, prediction, confidence
    assert len(rows) == 2 and all(row.split()[-2] in ("class_00", "class_01", "class_02", "class_03") for row in rows)
