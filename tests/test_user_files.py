"""The user's own files: each mistake in them is one ConfigError naming the file (and the line), never a
traceback, and no value is changed silently (a label "None", 0 and 0.0 as two classes, clipped pixels)."""

from __future__ import annotations

import gzip
import json
import pickle
import re
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from datamodules.image import ImageDataModule
from datamodules.language_model import LanguageModelDataModule
from datamodules.text import TextClassificationDataModule
from datamodules.text_sources import read_table
from datamodules.timeseries import TimeSeriesDataModule
from tests.helpers import run_cli, write_images
from validation import ConfigError


def write(path: Path, content: str | bytes) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    return str(path)


def jsonl(*rows: object) -> str:
    return "".join(json.dumps(row) + "\n" for row in rows)


# (case id, file name, content, message): tables read with columns text and label
BAD_TABLES = [
    ("csv-missing-label-cell", "t.csv", "text,label\ngood,pos\nbad\n", "t.csv line 3 has no value in column label"),
    ("csv-empty-label-cell", "t.csv", "text,label\ngood,pos\nbad, \n", "t.csv line 3 has no value in column label"),
    ("tsv-missing-label-cell", "t.tsv", "text\tlabel\ngood\tpos\nbad\n", "t.tsv line 3 has no value in column label"),
    ("jsonl-null-label", "t.jsonl", jsonl({"text": "a", "label": "x"}, {"text": "b", "label": None}), "line 2 has no"),
    ("jsonl-nan-label", "t.jsonl", '{"text": "a", "label": NaN}\n', "t.jsonl line 1 has no value in column label"),
    ("jsonl-missing-key", "t.jsonl", jsonl({"text": "a", "label": 1}, {"text": "b"}), "line 2 has no value in column"),
    ("jsonl-not-an-object", "t.jsonl", jsonl({"text": "a", "label": 1}, [1, 2]), "line 2 is a JSON list, not an"),
    ("jsonl-a-number-line", "t.jsonl", jsonl({"text": "a", "label": 1}, 7), "t.jsonl line 2 is a JSON int, not an"),
    ("jsonl-nested-value", "t.jsonl", jsonl({"text": "a", "label": {"y": 1}}), "line 1: label holds a JSON dict"),
    ("jsonl-bad-line-number", "t.jsonl", jsonl({"text": "a", "label": 1}) + "\n{oops\n", "t.jsonl line 3: not valid"),
    ("jsonl-huge-integer", "t.jsonl", '{"label": ' + "9" * 5000 + "}\n", "line 1: not valid JSON (Exceeds the limit"),
    ("jsonl-nested-too-deep", "t.jsonl", '{"label": ' + "[" * 10**6 + "]" * 10**6 + "}\n", "line 1: not valid JSON"),
    ("csv-unquoted-comma", "t.csv", "text,label\ngreat, really,pos\n", "line 2 has 3 cells but the header has 2"),
    ("csv-unclosed-quote", "t.csv", 'text,label\ngood,pos\n"bad,neg\nok,pos\n', "t.csv line 3: malformed CSV"),
    ("csv-text-after-quote", "t.csv", 'text,label\n"bad"ly,neg\n', "t.csv line 2: malformed CSV"),
    ("csv-duplicate-column", "t.csv", "text,label,label\na,b,c\n", "more than one column named label"),
    ("csv-utf16", "t.csv", "text,label\na,b\n".encode("utf-16"), "t.csv is UTF-16 text; convert it to UTF-8"),
    ("csv-utf16-no-mark", "t.csv", "text,label\na,b\n".encode("utf-16-le"), "line 1 holds a NUL character"),
]


@pytest.mark.parametrize(("name", "content", "message"), [c[1:] for c in BAD_TABLES], ids=[c[0] for c in BAD_TABLES])
def test_a_bad_table_is_one_error_naming_the_line(tmp_path: Path, name: str, content: str, message: str) -> None:
    path = Path(write(tmp_path / name, content))
    with pytest.raises(ConfigError, match="^" + str(path).replace("\\", "\\\\")) as error:
        read_table(path, ["text", "label"])
    assert message in str(error.value) and "\n" not in str(error.value)


def test_numbers_are_labels_by_value_and_names_lose_stray_spaces(tmp_path: Path) -> None:
    # 0 and 0.0 (JSON numbers) are one class; "pos" and "pos " (a spreadsheet's space) are one class, in a
    # column named "label" by a header "text, label"
    labels = [0, 0.0, 1, 1.0, True]
    source = write(tmp_path / "t.jsonl", jsonl(*({"text": f"w{i} x", "label": labels[i % 5]} for i in range(100))))
    assert TextClassificationDataModule(source=source).ready().classes == ["0", "1", "true"]  # type: ignore[attr-defined]
    rows = "".join(f"w{i},{' pos' if i % 3 == 0 else 'pos ' if i % 3 == 1 else 'neg'}\n" for i in range(60))
    datamodule = TextClassificationDataModule(source=write(tmp_path / "t.csv", "text, label\n" + rows))
    assert datamodule.num_classes == 2 and datamodule.classes == ["neg", "pos"]


def test_a_byte_order_mark_long_cells_and_trailing_separators_are_read(tmp_path: Path) -> None:
    long_text = "word " * 40_000  # 200,000 characters, more than the csv module's default cell limit
    content = "\ufefftext,label\n" + f"{long_text},pos,\n" + "short,neg,,\n"
    table = read_table(Path(write(tmp_path / "t.csv", content)), ["text", "label"])
    assert table.rows == [{"text": long_text, "label": "pos"}, {"text": "short", "label": "neg"}]
    assert table.lines == [2, 3]
    lines = "\ufeff" + jsonl({"text": "a", "label": "x\u2028y"})  # U+2028 is a line break to str.splitlines
    assert read_table(Path(write(tmp_path / "t.jsonl", lines)), ["text", "label"]).rows == [
        {"text": "a", "label": "x\u2028y"}
    ]


def test_a_language_model_text_loses_its_byte_order_mark(tmp_path: Path) -> None:
    source = write(tmp_path / "t.txt", "\ufeff" + "abcdefgh " * 200)
    datamodule = LanguageModelDataModule(source=source, context_length=8)
    datamodule.ready()
    assert "\ufeff" not in datamodule.tokenizer.chars  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("inf", "has an infinite value (row 32)"),
        ("-Infinity", "has an infinite value (row 32)"),
        ("", "line 32 has no"),
    ],
)
def test_a_series_value_that_is_infinite_or_empty_names_its_row(tmp_path: Path, value: str, message: str) -> None:
    values = ["1.5"] * 30 + [value] + ["2.5"] * 30
    source = write(tmp_path / "s.csv", "t,value\n" + "".join(f"{i},{v}\n" for i, v in enumerate(values)))
    with pytest.raises(ConfigError, match=re.escape(message)):
        TimeSeriesDataModule(source=source, columns=["value"], window=4).ready()


@pytest.mark.parametrize(
    "values", [["1e308"] * 60, ["1.0"] * 50 + ["1e40"] * 10], ids=["mean-overflows", "beyond-float32-when-normalised"]
)
def test_a_series_too_large_to_normalise_is_one_error(tmp_path: Path, values: list[str]) -> None:
    source = write(tmp_path / "s.csv", "value\n" + "".join(f"{v}\n" for v in values))
    with pytest.raises(ConfigError, match=r"s\.csv are too large to normalise \(up to 1e\+(308|40)\); rescale them"):
        TimeSeriesDataModule(source=source, columns=["value"], window=4).ready()


def test_a_series_value_that_is_not_a_number_names_its_line_and_column(tmp_path: Path) -> None:
    source = write(tmp_path / "s.csv", "t,value\n" + "".join(f"{i},{i}\n" for i in range(30)) + "30,many\n")
    with pytest.raises(ConfigError, match=r"s\.csv line 32: a value is not a number \('many' in value\)"):
        TimeSeriesDataModule(source=source, columns=["value"], window=4).ready()


def folder_module(root: Path, **options: object) -> ImageDataModule:
    datamodule = ImageDataModule(dataset="folder", data_dir=str(root), **options)  # type: ignore[arg-type]
    datamodule.prepare_data()
    datamodule.setup()
    return datamodule


def test_16_bit_grey_images_are_scaled_not_clipped(tmp_path: Path) -> None:
    # Two classes told apart only above 8 bits' range (20,000 vs 40,000 of 65,535): clipped, both were 255.
    for name, value in (("dim", 20_000), ("bright", 40_000)):
        (tmp_path / name).mkdir()
        for index in range(5):
            pixels = np.full((5, 6), value + index, dtype=np.uint16)
            Image.fromarray(pixels).save(tmp_path / name / f"{index}.png")  # mode I;16
    big_endian = np.full((5, 6), 65535, dtype=">u2")
    Image.fromarray(big_endian).save(tmp_path / "bright" / "big_endian.tif")  # mode I;16B
    datamodule = folder_module(tmp_path, val_fraction=0.2, test_fraction=0.2)
    assert datamodule.image_shape == (1, 5, 6)
    images = torch.cat([images for images, _ in datamodule.splits.values()])
    labels = torch.cat([labels for _, labels in datamodule.splits.values()])
    expected = {0: {156}, 1: {78}}  # round(40,000 / 257), round(20,000 / 257); classes sorted: bright, dim
    assert {label: set(images[labels == label].unique().tolist()) - {255} for label in (0, 1)} == expected
    assert (images == 255).sum() == 30  # the 16-bit white is 8-bit white


def test_floating_point_images_are_refused(tmp_path: Path) -> None:
    write_images(tmp_path, {"a": 0, "b": 100}, count=2)
    Image.fromarray(np.ones((5, 6), dtype=np.float32)).save(tmp_path / "a" / "0.tif")
    with pytest.raises(ConfigError, match=r"0\.tif has floating-point pixels"):
        folder_module(tmp_path)


def bomb_png(path: Path, width: int, height: int) -> None:
    """A PNG header claiming width x height 1-bit pixels, with no pixel data: PIL refuses it on opening."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b""))


@pytest.mark.parametrize("size", [(10, 6), (12, 10)], ids=["over-the-warning-limit", "over-the-error-limit"])
def test_a_decompression_bomb_is_skipped_as_unreadable(tmp_path: Path, monkeypatch, size: tuple[int, int]) -> None:
    write_images(tmp_path, {"a": 0, "b": 100}, count=3)  # 6x5: 30 pixels each
    Image.new("L", size).save(tmp_path / "a" / "bomb.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 50)  # PIL warns above 50 pixels, refuses above 100
    with pytest.warns(UserWarning, match=r"skipping unreadable image .*bomb\.png"):
        datamodule = folder_module(tmp_path)
    assert sum(len(labels) for _, labels in datamodule.splits.values()) == 6


def test_links_to_files_are_followed_and_other_links_named(tmp_path: Path) -> None:
    # Decision: a link to an image is read wherever it points (a curated subset of a larger folder); a link
    # to a folder is not entered (it could loop, or reach another class) and a dangling link is unreadable:
    # both are named in a warning instead of being dropped silently.
    write_images(tmp_path / "data", {"a": 0, "b": 100}, count=3)
    write_images(tmp_path / "elsewhere", {"c": 200}, count=2)
    (tmp_path / "data" / "a" / "linked.png").symlink_to(tmp_path / "elsewhere" / "c" / "0.png")
    (tmp_path / "data" / "a" / "gone.png").symlink_to(tmp_path / "nowhere.png")
    (tmp_path / "data" / "b" / "more").symlink_to(tmp_path / "elsewhere" / "c")
    (tmp_path / "data" / "b" / "loop").symlink_to(tmp_path / "data")
    with pytest.warns(UserWarning, match="not following|skipping unreadable") as caught:
        datamodule = folder_module(tmp_path / "data")
    messages = sorted({str(warning.message).split(":")[0] for warning in caught})
    assert messages == [
        f"not following {tmp_path / 'data' / 'b' / 'loop'}, a link to a folder; link its images one by one",
        f"not following {tmp_path / 'data' / 'b' / 'more'}, a link to a folder; link its images one by one",
        f"skipping unreadable image {tmp_path / 'data' / 'a' / 'gone.png'}",
    ]
    images = torch.cat([images for images, _ in datamodule.splits.values()])
    assert sum(len(labels) for _, labels in datamodule.splits.values()) == 7 and (images == 200).any()


def write_idx(path: Path, array: np.ndarray, cut: int = 0) -> None:
    """An IDX file of unsigned bytes, gzipped, its last `cut` bytes missing."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(size.to_bytes(4, "big") for size in array.shape)
    data = header + array.astype(np.uint8).tobytes()
    with gzip.open(path, "wb") as file:
        file.write(data[: len(data) - cut])


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        ("truncated", "train-images-idx3-ubyte.gz holds 23510 bytes of data where its header promises 23520"),
        ("label-11", "train-labels-idx1-ubyte.gz has labels outside 0-9"),
        ("one-label-short", "train-labels-idx1-ubyte.gz has 30 images but 29 labels"),
        ("not-gzip", "t10k-labels-idx1-ubyte.gz cannot be read (Not a gzipped file"),
    ],
)
def test_damaged_mnist_files_are_one_error(tmp_path: Path, damage: str, message: str) -> None:
    rng = np.random.default_rng(0)
    write_idx(tmp_path / "train-images-idx3-ubyte.gz", rng.integers(0, 256, (30, 28, 28)), 10 * (damage == "truncated"))
    labels = np.arange(30 - (damage == "one-label-short")) % 10 + (damage == "label-11") * 2
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", labels)
    write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", rng.integers(0, 256, (10, 28, 28)))
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.arange(10))
    if damage == "not-gzip":
        (tmp_path / "t10k-labels-idx1-ubyte.gz").write_bytes(b"plain bytes")
    with pytest.raises(ConfigError, match=re.escape(message)):
        ImageDataModule(dataset="mnist", data_dir=str(tmp_path)).setup()


class Payload:
    """Unpickling this creates a file: what a planted pickle could do instead."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, ...]:
        return (Path.touch, (self.marker,))


@pytest.mark.parametrize("content", ["payload", "garbage"])
def test_cifar_pickles_run_no_code_and_garbage_is_one_error(tmp_path: Path, content: str) -> None:
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    batch = {b"data": np.zeros((2, 3072), dtype=np.uint8), b"labels": [0, 1]}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        (folder / name).write_bytes(pickle.dumps(batch, protocol=2))
    marker = tmp_path / "ran"
    meta = {b"label_names": [f"c{i}".encode() for i in range(10)]}
    (folder / "batches.meta").write_bytes(
        pickle.dumps(meta | {b"x": Payload(marker)}) if content == "payload" else b"x"
    )
    expected = "asks to run pathlib.Path.touch" if content == "payload" else "batches.meta is not a CIFAR-10 file"
    with pytest.raises(ConfigError, match=expected):
        ImageDataModule(dataset="cifar10", data_dir=str(tmp_path)).setup()
    assert not marker.exists()


# End to end: the command reports each in one line, exit code 2, and leaves no run directory.
SENTIMENT = ["--config", "lstm_sentiment", "--data.source"]
COMMANDS = [
    (
        "csv-label-missing",
        lambda t: [*SENTIMENT, write(t / "r.csv", "text,label\n" + "good,pos\nbad,neg\n" * 30 + "meh\n")],
        "r.csv line 62 has no value in column label; fill it in or drop the row",
    ),
    (
        "jsonl-line-not-an-object",
        lambda t: [*SENTIMENT, write(t / "r.jsonl", jsonl(*[{"text": "a", "label": "b"}] * 30, "c"))],
        "r.jsonl line 31 is a JSON str, not an object; write one object per line",
    ),
    (
        "folder-of-bombs",
        lambda t: ["--config", "cnn_digits", "--data.dataset", "folder", "--data.data_dir", bomb_folder(t)],
        "no images found in",
    ),
]


def bomb_folder(root: Path) -> str:
    for name in ("a", "b"):
        (root / "bombs" / name).mkdir(parents=True)
        bomb_png(root / "bombs" / name / "0.png", 20_000, 20_000)  # 400 M pixels in a file of 57 bytes
    return str(root / "bombs")


@pytest.mark.slow
@pytest.mark.parametrize(("arguments", "expected"), [c[1:] for c in COMMANDS], ids=[c[0] for c in COMMANDS])
def test_the_command_reports_a_bad_file_in_one_line(tmp_path: Path, arguments, expected: str) -> None:
    result = run_cli(*arguments(tmp_path), "--run.root", str(tmp_path / "runs"), cwd=tmp_path)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stderr
    assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], result.stderr
    assert not (tmp_path / "runs").exists()
