"""The kinds of new input a trained model takes, in one table that the commands and the tests share.

A datamodule names its kind (`DataModule.input_kind`); `KINDS[kind]` says how `python -m experiments.predict`
reads that kind from the command line (files, folders, words, letters, numbers), what the inputs are called
in messages, how `--explain` shows an explanation of one (a picture, or coloured tokens), and how to make a
sample of it for a test. A new kind is one entry here.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from datamodules.audio_files import AUDIO_EXTENSIONS
from datamodules.fasta import Record, parse_fasta, read_fasta
from datamodules.image_sources import IMAGE_EXTENSIONS
from datamodules.text_sources import read_text_file
from datamodules.timeseries import csv_series
from validation import ConfigError, require


@dataclass(frozen=True)
class GivenInputs:
    """What the user gave on the command line: the arguments after the run, `--from_file`, `--prompt`."""

    values: list[str]
    from_file: str | None = None
    prompt: str | None = None


Reader = Callable[[GivenInputs, Mapping[str, Any]], tuple[list[Any], list[str]]]
Sample = Callable[[Path, Mapping[str, Any], Mapping[str, Any]], list[str]]


@dataclass(frozen=True)
class InputKind:
    """One kind of input. `read(given, facts)` -> (the inputs as the datamodule's `encode_inputs` takes them,
    a name for each to show), `facts` being the datamodule's arguments (`hparams`); `sample(folder, state,
    facts)` -> command-line arguments of new inputs for a model of this kind (files made in `folder`), from
    the datamodule's inference state and arguments."""

    name: str
    described: str  # what the user gives, for messages: "image files or folders of them"
    read: Reader
    sample: Sample
    explained_as: Literal["picture", "tokens"] | None = None  # how --explain shows one; None: not explained
    files: bool = False  # whether each input is a file (explanations are then named after it)

    @property
    def explanation_suffix(self) -> str | None:
        return {"picture": ".png", "tokens": ".html", None: None}[self.explained_as]


def files_under(paths: list[str], extensions: tuple[str, ...], what: str) -> list[Path]:
    """Files given, and those of the given folders (recursively, sorted) whose suffix is one of `extensions`."""
    found: list[Path] = []
    for value in paths:
        path = Path(value)
        if path.is_dir():
            inside = sorted(p for p in path.rglob("*") if p.suffix.lower() in extensions and p.is_file())
            if not inside:
                raise ConfigError(f"folder {path} holds no {what} files ({', '.join(extensions)})")
            found += inside
        elif path.is_file():
            found.append(path)
        else:
            raise ConfigError(f"{path} not found; give {what} files or folders of them")
    return found


def check_given(given: GivenInputs, kind: str) -> None:
    """Inputs other than texts: no --prompt, and some arguments (or a file of them, where that is allowed)."""
    if given.prompt is not None:
        raise ConfigError("--prompt is for language models; give this model's inputs as arguments")
    if not given.values and not (kind == "sequences" and given.from_file):
        raise ConfigError(f"give the {kind} to predict on (see --help)")


def read_files(kind: str, extensions: tuple[str, ...], what: str) -> Reader:
    def read(given: GivenInputs, facts: Mapping[str, Any]) -> tuple[list[Any], list[str]]:
        check_given(given, kind)
        paths = files_under(given.values, extensions, what)
        return paths, [str(path) for path in paths]

    return read


def read_texts(given: GivenInputs, facts: Mapping[str, Any]) -> tuple[list[Any], list[str]]:
    """Texts from --prompt, the arguments, --from_file (one per line), or stdin (one per line)."""
    if given.prompt is not None:
        texts = [given.prompt, *given.values]
    elif given.from_file:
        texts = [line for line in read_text_file(Path(given.from_file)).split("\n") if line.strip()]
        if not texts:
            raise ConfigError(f"{given.from_file} holds no text; write one input per line")
    elif given.values:
        texts = list(given.values)
        # os.path.isfile: a long text is no file name (Path.is_file raises "File name too long" for it)
        named = next((text for text in texts if os.path.isfile(text)), None)
        if named is not None:  # a picture or a file of texts given to a text model: never read its name
            raise ConfigError(
                f"{named} is a file, and this model reads texts: give a file of texts (one per line) with "
                f"--from_file {named}, or a text that is also a file's name on stdin"
            )
    elif not sys.stdin.isatty():
        texts = [line.rstrip("\n") for line in sys.stdin if line.strip()]
    else:
        texts = []
    for number, text in enumerate(texts, 1):
        if not text.strip():
            raise ConfigError(f"input {number} is an empty text; give some words")
    return texts, texts


def read_sequences(given: GivenInputs, facts: Mapping[str, Any]) -> tuple[list[Any], list[str]]:
    """Records of FASTA files, and letters given as arguments (named sequence-1, sequence-2, ...)."""
    check_given(given, "sequences")
    records: list[Record] = []
    for number, value in enumerate([*given.values, *([given.from_file] if given.from_file else [])], 1):
        if os.path.isfile(value):  # a long sequence of letters is no file name (see read_texts)
            records += read_fasta(Path(value))
        elif value.isalpha():
            records += parse_fasta(f">sequence-{number}\n{value}", Path(f"argument {number}"))
        else:
            raise ConfigError(f"{value} is neither a FASTA file nor a sequence of letters")
    return records, [record.id for record in records]


def read_series(given: GivenInputs, facts: Mapping[str, Any]) -> tuple[list[Any], list[str]]:
    """One series (T, F), oldest first: a CSV with the model's columns, or the values as arguments."""
    check_given(given, "series")
    values, window, columns = given.values, facts["window"], list(facts["columns"] or [])
    if len(values) == 1 and Path(values[0]).is_file():
        if not columns:
            raise ConfigError(
                f"this model was trained on the built-in series {facts['source']}; give its last {window} values "
                "as arguments (oldest first)"
            )
        series = csv_series(Path(values[0]), columns)
    else:
        try:
            series = np.array([float(value) for value in values], dtype=np.float64)[:, None]
        except ValueError:
            raise ConfigError(
                "give the series as one CSV file, or as numbers (oldest first); "
                f"{next(v for v in values if not is_number(v))!r} is neither"
            ) from None
        if columns and len(columns) > 1:
            raise ConfigError(f"this model reads {len(columns)} columns ({', '.join(columns)}); give a CSV of them")
    if len(series) < window:
        raise ConfigError(f"this model reads the last {window} values; got {len(series)}")
    if not np.isfinite(series).all():
        raise ConfigError("the series has missing or infinite values; fill them first")
    return [series], ["series"]


def is_number(value: str) -> bool:
    try:
        float(value)
    except ValueError:
        return False
    return True


def sample_images(folder: Path, state: Mapping[str, Any], facts: Mapping[str, Any]) -> list[str]:
    """Three noise images of the model's shape, as PNG files."""
    from PIL import Image

    rng = np.random.default_rng(0)
    channels, height, width = state["image_shape"]
    paths = []
    for number in range(3):
        pixels = rng.integers(0, 256, (height, width, channels), dtype=np.uint8)
        path = folder / f"new-{number}.png"
        Image.fromarray(pixels.squeeze(-1) if channels == 1 else pixels).save(path)
        paths.append(str(path))
    return paths


def sample_audio(folder: Path, state: Mapping[str, Any], facts: Mapping[str, Any]) -> list[str]:
    """A second of quiet noise at the model's sample rate, as a WAV file."""
    soundfile = require("soundfile", "a recording to predict on")
    path = folder / "new.wav"
    rate = state["sample_rate"]
    soundfile.write(path, 0.1 * np.random.default_rng(0).standard_normal(rate), rate)
    return [str(path)]


def sample_texts(folder: Path, state: Mapping[str, Any], facts: Mapping[str, Any]) -> list[str]:
    return ["a fine and moving film", "dull"]  # reviews, sentences, sources, prompts alike


def sample_sequences(folder: Path, state: Mapping[str, Any], facts: Mapping[str, Any]) -> list[str]:
    return ["ACGT" * 60, "TTGCA" * 40]


def sample_series(folder: Path, state: Mapping[str, Any], facts: Mapping[str, Any]) -> list[str]:
    values = np.random.default_rng(0).standard_normal(facts["window"] + 5)
    return [str(round(float(value), 3)) for value in values]


AUDIO = "audio files or folders of them (WAV, FLAC, OGG, MP3)"
KINDS: dict[str, InputKind] = {
    kind.name: kind
    for kind in (
        InputKind(
            "images",
            "image files or folders of them",
            read_files("images", IMAGE_EXTENSIONS, "image"),
            sample_images,
            explained_as="picture",
            files=True,
        ),
        InputKind("audio", AUDIO, read_files("audio", AUDIO_EXTENSIONS, "audio"), sample_audio, files=True),
        InputKind("texts", "texts: arguments, --from_file or stdin", read_texts, sample_texts, explained_as="tokens"),
        InputKind(
            "sequences", "FASTA files or sequences of letters", read_sequences, sample_sequences, explained_as="tokens"
        ),
        InputKind("series", "a CSV file of the model's columns, or values", read_series, sample_series),
    )
}


def input_kind(datamodule: Any) -> InputKind:
    """The kind of new input `datamodule` takes; a ConfigError where it takes none."""
    kind = getattr(datamodule, "input_kind", "")
    if kind not in KINDS:
        raise ConfigError(f"{type(datamodule).__name__} takes no new inputs: its models cannot predict")
    return KINDS[kind]
