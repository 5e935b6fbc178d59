"""Texts with labels (a CSV, TSV or JSON Lines file of any size) as prepared shards (LitData chunks), streamed
by DataLoader workers with flat memory.

    <output>/firstlight.json           manifest (`datamodules.prepared`): its state is the datamodule's inference
                                       state (tokenizer, classes); settings, how the shards were cut
    <output>/<split>/index.json        LitData's index of the split's chunks
    <output>/<split>/chunk-P-N.bin     samples {"tokens": int32 ids (<bos> text, cut to max_length), "label":
                                       class id, "index": the sample's position in its split}
    <output>/<split>/lengths.npy       every sample's token count, in position order (for length bucketing)

The file is read as a stream of rows, never whole, with `text_sources.read_table`'s rules: UTF-8 (a byte-order
mark dropped, UTF-16 and NUL refused), line ends as text mode reads them, a blank, missing or null cell an
error naming its line, JSON values as the text a CSV cell would hold. Rows go to train, val or test by a seeded
hash of their group or, without a group column, of their row number (`splits.split_of`), as the in-memory path splits
them, so both hold the same samples; labels are classes in sorted order, as there.

Preparing is one pass over the file that checks every row, counts the splits, collects the labels and feeds
the training texts to the tokenizer's trainer as they stream by (tokenizers' `train_from_iterator`); then the
file is cut into parts of `part_rows` rows that worker processes encode, each part into a folder per split,
renamed into place when complete. The plan (tokenizer, classes, where each part starts) is kept beside them, so
a stopped prepare, run again, redoes at most the parts in flight. Samples keep the file's order within a split;
chunks are small (`sample_shards.CHUNK_BYTES`), so the chunks of one shuffle window come from all over the file.
"""

from __future__ import annotations

import csv
import itertools
import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch

from datamodules.image_shards import claim_shard_folder
from datamodules.prepared import Manifest, fingerprint
from datamodules.sample_shards import PartWriter, ShardSamples, encode_parts, finish, read_plan, start_prepare
from datamodules.splits import SPLITS, check_splits, split_of
from datamodules.streaming import ChunkedOrder
from datamodules.text_sources import GZIP_MAGIC, cell_text
from datamodules.token_corpus import Progress, check_text_file
from datamodules.tokenization import CharTokenizer, Tokenizer, classifier_input, tokenizer_from_json, train_tokenizer
from validation import ConfigError, check_range

KIND = "texts"
PART_ROWS = 32_768  # rows per unit of work (and of resumption)
PLAN = ".firstlight-texts-plan.json"  # the scan's result and the tokenizer, for a prepare that goes on


# -- reading a table as a stream -----------------------------------------------------------------------------


class Lines:
    """A UTF-8 file's lines from byte `start` on, as `text_sources.read_text_file` reads them: "\\r\\n" and a
    lone "\\r" end a line as "\\n"; a byte-order mark (at byte 0) is dropped; UTF-16, bytes that are not UTF-8
    and NUL characters are one-line errors. `number` is the line last read and `end` the byte after it."""

    def __init__(self, path: Path, start: int = 0, first_line: int = 1) -> None:
        self.path = path
        self.start = start
        self.number = first_line - 1
        self.end = start
        self.text_seen = False  # a character other than white space, so far

    def __iter__(self) -> Iterator[str]:
        with self.path.open("rb") as file:
            file.seek(self.start)
            if self.start == 0:
                head = file.read(3)
                if head.startswith((b"\xff\xfe", b"\xfe\xff")):
                    raise ConfigError(f"{self.path} is UTF-16 text; convert it to UTF-8")
                if head.startswith(GZIP_MAGIC):  # read from byte offsets: it must be plain text
                    raise ConfigError(f"{self.path} is gzip-compressed; preparing reads plain text: gunzip it first")
                self.end = 3 if head == b"\xef\xbb\xbf" else 0
                file.seek(self.end)
            for raw in file:
                for data, size in line_pieces(raw):
                    try:
                        text = data.decode("utf-8")
                    except UnicodeDecodeError as error:
                        byte = self.end + error.start
                        raise ConfigError(f"{self.path} is not UTF-8 text (byte {byte}); convert it to UTF-8") from None
                    self.number += 1
                    self.end += size
                    if "\0" in text:  # valid UTF-8, but no text holds it: UTF-16 without a mark, or a binary file
                        raise ConfigError(
                            f"{self.path} line {self.number} holds a NUL character: not UTF-8 text (UTF-16?); "
                            "convert it to UTF-8"
                        )
                    self.text_seen = self.text_seen or not text.isspace()
                    yield text


def line_pieces(raw: bytes) -> Iterator[tuple[bytes, int]]:
    """A binary line (up to and with its b"\\n") as the lines text mode makes of it: (bytes, ending in b"\\n"
    but at the end of the file; their size in the file). A lone b"\\r" ends a line too."""
    if b"\r" not in raw:
        yield raw, len(raw)
        return
    ending = b"\r\n" if raw.endswith(b"\r\n") else b"\n" if raw.endswith(b"\n") else b""
    pieces = raw[: len(raw) - len(ending)].split(b"\r")  # no UTF-8 character holds the byte \r
    for piece in pieces[:-1]:
        yield piece + b"\n", len(piece) + 1
    if pieces[-1] or ending:
        yield pieces[-1] + (b"\n" if ending else b""), len(pieces[-1]) + len(ending)


class Row(NamedTuple):
    cells: dict[str, str]  # column -> its text (never blank)
    line: int  # where the row starts
    begin: int  # the byte where reading for this row began (after the row before), and its line: a reader
    begin_line: int  # started there reads this row next


class TableStream:
    """The named columns of a CSV, TSV or JSON Lines file, row by row, with `read_table`'s rules; memory
    holds one row at a time. Read from its start, or from a row's `begin` (with the CSV's `header`)."""

    def __init__(
        self, path: Path, columns: Sequence[str], start: int = 0, first_line: int = 1, header: list[str] | None = None
    ) -> None:
        self.path = path
        self.columns = list(columns)
        self.whole = start == 0  # from the start: the first row's columns and an empty file are checked
        self.lines = Lines(path, start, first_line)
        self.header = header  # a CSV's column names: read from the file when it starts at its beginning
        self.json = path.suffix.lower() in (".jsonl", ".json")

    def __iter__(self) -> Iterator[Row]:
        rows = self.json_rows() if self.json else self.csv_rows("\t" if self.path.suffix.lower() == ".tsv" else ",")
        first = True
        for row, line, begin, begin_line in rows:
            if first and self.whole:
                missing = [column for column in self.columns if column not in row]
                if missing:
                    found = ", ".join(map(str, row.keys()))
                    raise ConfigError(
                        f"{self.path} has no column {', '.join(missing)} (found: {found}); name the right columns"
                    )
            first = False
            for column in self.columns:
                if row.get(column) is None or not str(row[column]).strip():
                    raise ConfigError(
                        f"{self.path} line {line} has no value in column {column}; fill it in or drop the row"
                    )
            yield Row({column: str(row[column]) for column in self.columns}, line, begin, begin_line)
        if first and self.whole:
            if not self.lines.text_seen:
                raise ConfigError(f"{self.path} is empty; give a file with text")
            raise ConfigError(f"{self.path} has no rows; give a file with a header and at least one row")

    def json_rows(self) -> Iterator[tuple[dict[str, str | None], int, int, int]]:
        """One object per line -> its values as cell texts (`text_sources.cell_text`); blank lines skipped."""
        begin, begin_line = self.lines.end, self.lines.number + 1
        for text in self.lines:
            if not text.strip():
                continue
            number = self.lines.number
            try:
                value = json.loads(text)
            except (ValueError, RecursionError) as error:  # also an integer of over 4300 digits, or nesting too deep
                reason = error.msg if isinstance(error, json.JSONDecodeError) else str(error).split(";")[0]
                raise ConfigError(
                    f"{self.path} line {number}: not valid JSON ({reason}); one object per line"
                ) from None
            if not isinstance(value, dict):
                raise ConfigError(
                    f"{self.path} line {number} is a JSON {type(value).__name__}, not an object; write one object "
                    "per line"
                )
            yield (
                {key: cell_text(self.path, number, key, item) for key, item in value.items()},
                number,
                begin,
                begin_line,
            )
            begin, begin_line = self.lines.end, self.lines.number + 1

    def csv_rows(self, delimiter: str) -> Iterator[tuple[dict[str, str | None], int, int, int]]:
        """Rows of a CSV or TSV as {header: cell} (None for a cell the row lacks), as `text_sources.csv_rows`."""
        kind, separator = ("TSV", "tabs") if delimiter == "\t" else ("CSV", "commas")
        reader = csv.reader(self.lines, delimiter=delimiter, strict=True)
        size = self.path.stat().st_size
        limit = csv.field_size_limit(max(csv.field_size_limit(), size))  # a cell may be as long as the file
        end = self.lines.number  # the line the last row read ends on (a quoted cell may span lines)
        try:
            if self.header is None:  # the first line that is not blank; "text, label" names text and label
                self.header = [name.strip() for name in next((cells for cells in reader if cells), [])]
                if duplicated := sorted({name for name in self.header if name and self.header.count(name) > 1}):
                    raise ConfigError(
                        f"{self.path} has more than one column named {', '.join(duplicated)}; rename them"
                    )
                end = self.lines.number
            header = self.header
            begin, begin_line = self.lines.end, end + 1
            for cells in reader:
                start, end = end + 1, self.lines.number
                if not cells:  # a blank line
                    continue
                if any(cell.strip() for cell in cells[len(header) :]):  # empty ones are trailing separators
                    raise ConfigError(
                        f"{self.path} line {start} has {len(cells)} cells but the header has {len(header)}; "
                        f"quote cells that contain {separator}"
                    )
                yield dict(itertools.zip_longest(header, cells[: len(header)])), start, begin, begin_line
                begin, begin_line = self.lines.end, end + 1
        except csv.Error as error:
            raise ConfigError(
                f'{self.path} line {end + 1}: malformed {kind} ({error}); a quoted cell ends with " and a " inside '
                'it is ""'
            ) from None
        finally:
            csv.field_size_limit(limit)


# -- preparing ------------------------------------------------------------------------------------------------


class Scan:
    """The pass over the file: `training_texts()` yields the training split's texts, in order, for the
    tokenizer's trainer, and records on the way each split's size and labels, and where each part starts."""

    def __init__(self, source: Path, settings: dict[str, Any], say: Progress) -> None:
        self.source = source
        self.settings = settings
        self.say = say
        self.counts = dict.fromkeys(SPLITS, 0)
        self.labels: dict[str, set[str]] = {split: set() for split in SPLITS}
        self.parts: list[dict[str, Any]] = []  # start (byte), line, rows, first (split -> its first sample's index)
        self.header: list[str] | None = None

    def training_texts(self) -> Iterator[str]:
        s = self.settings
        rows = TableStream(self.source, columns(s))
        read = 0
        for number, row in enumerate(rows):
            if number % s["part_rows"] == 0:
                self.parts.append({"start": row.begin, "line": row.begin_line, "rows": 0, "first": dict(self.counts)})
            self.parts[-1]["rows"] += 1
            split = row_split(row, number, s)
            self.counts[split] += 1
            self.labels[split].add(row.cells[s["label_column"]].strip())
            self.say.advance(rows.lines.end - read)
            read = rows.lines.end
            if split == "train":
                yield row.cells[s["text_column"]]
        self.header = rows.header
        size = self.source.stat().st_size
        for part, after in zip(self.parts, [*(part["start"] for part in self.parts[1:]), size], strict=True):
            part["bytes"] = after - part["start"]


def columns(settings: dict[str, Any]) -> list[str]:
    names = [settings["text_column"], settings["label_column"]]
    return names + ([settings["group_column"]] if settings["group_column"] else [])


def row_split(row: Row, number: int, settings: dict[str, Any]) -> str:
    """The split of the row `number` (0 for the first row), as `TextClassificationDataModule` splits."""
    group = row.cells[settings["group_column"]].strip() if settings["group_column"] else str(number)
    return split_of(group, settings["val_fraction"], settings["test_fraction"], settings["seed"])


def train_streaming(kind: str, texts: Iterator[str], vocab_size: int) -> Tokenizer:
    """`tokenization.train_tokenizer` on a stream of texts, none kept: the same tokenizer as from their list."""
    if kind == "char":
        chars: set[str] = set()
        for text in texts:
            chars.update(text)
        return CharTokenizer(sorted(chars))
    # tokenizers' `train_from_iterator` takes any iterable; the annotation says list for the in-memory callers
    return train_tokenizer(kind, texts, vocab_size)  # type: ignore[arg-type]


def make_plan(source: Path, settings: dict[str, Any], say: Progress) -> dict[str, Any]:
    """Scan the file and train the tokenizer on its training texts: what the parts need to be encoded."""
    scan = Scan(source, settings, say)
    say.start("reading and training the tokenizer", source.stat().st_size)
    tokenizer = train_streaming(settings["tokenizer"], scan.training_texts(), settings["vocab_size"])
    say.finish()
    classes = check_splits(str(source), scan.counts, scan.labels)
    return {
        "settings": settings,
        "header": scan.header,
        "counts": scan.counts,
        "classes": classes,
        "parts": scan.parts,
        "tokenizer": tokenizer.to_json(),
    }


WORKER_TOKENIZER: list[Tokenizer] = []  # a worker's tokenizer, set by `start_worker`


def start_worker(tokenizer_json: str) -> None:
    WORKER_TOKENIZER[:] = [tokenizer_from_json(tokenizer_json)]


def write_part(job: tuple[str, str, int, dict[str, Any], dict[str, Any]]) -> int:
    """Encode part `number` of the file: its rows of each split not written yet (`PartWriter`). Returns the
    part's bytes of the file (for the progress line)."""
    source, output_name, number, part, plan = job  # plan: its settings, header and classes
    settings = plan["settings"]
    tokenizer = WORKER_TOKENIZER[0]
    label_ids = {label: index for index, label in enumerate(plan["classes"])}
    writer = PartWriter(Path(output_name), number, part["first"])
    rows = TableStream(Path(source), columns(settings), part["start"], part["line"], plan["header"])
    for offset, row in enumerate(itertools.islice(rows, part["rows"])):
        split = row_split(row, number * settings["part_rows"] + offset, settings)
        if not writer.wanted(split):
            writer.add(split, {}, 0)
            continue
        ids = classifier_input(tokenizer, row.cells[settings["text_column"]], settings["max_length"])
        label = label_ids[row.cells[settings["label_column"]].strip()]
        writer.add(split, {"tokens": np.asarray(ids, np.int32), "label": label}, len(ids))
    writer.close()
    return int(part["bytes"])


def prepare_texts(
    source: Path,
    output: Path,
    *,
    text_column: str = "text",
    label_column: str = "label",
    group_column: str | None = None,
    tokenizer: str = "word",
    vocab_size: int = 20000,
    max_length: int = 128,
    val_fraction: float = 0.1,
    test_fraction: float = 0.1,
    seed: int = 0,
    workers: int | None = None,
    overwrite: bool = False,
    progress: bool = True,
    part_rows: int = PART_ROWS,
) -> Manifest:
    """Prepare a CSV, TSV or JSON Lines file of texts and labels as shards in `output` (see the module's
    docstring), in bounded memory, with `workers` processes; resumable. The arguments are
    `TextClassificationDataModule`'s. Returns the manifest written."""
    source, output = Path(source).resolve(), Path(output).resolve()
    if tokenizer not in ("char", "word", "bpe"):
        raise ConfigError(f"tokenizer must be 'char', 'word' or 'bpe', not {tokenizer!r}")
    check_range("vocab_size", vocab_size, 8)
    check_range("max_length", max_length, 2)
    check_range("val_fraction", val_fraction, 0.0, 0.5, low_open=True)
    check_range("test_fraction", test_fraction, 0.0, 0.5, low_open=True)
    check_range("part_rows", part_rows, 1)
    check_text_file(source)
    settings: dict[str, Any] = {
        "kind": KIND,
        "source": str(source),
        "fingerprint": fingerprint(source),
        "text_column": text_column,
        "label_column": label_column,
        "group_column": group_column,
        "tokenizer": tokenizer,
        "vocab_size": vocab_size,
        "max_length": max_length,
        "val_fraction": val_fraction,
        "test_fraction": test_fraction,
        "seed": seed,
        "part_rows": part_rows,
    }
    claim_shard_folder(output, settings, overwrite)
    say = Progress(source.name, progress)
    plan = read_plan(output, settings, PLAN)
    if plan is None:
        plan = make_plan(source, settings, say)  # nothing is written before the file has been read through
        start_prepare(output, settings, plan, PLAN)
    shared = {name: plan[name] for name in ("settings", "header", "classes")}  # what every part needs
    jobs = [(str(source), str(output), number, part, shared) for number, part in enumerate(plan["parts"])]
    encode_parts(output, jobs, write_part, workers, say, start_worker, (plan["tokenizer"],))
    manifest = Manifest(
        kind=KIND,
        source=str(source),
        fingerprint=settings["fingerprint"],
        splits=plan["counts"],
        state={"tokenizer": plan["tokenizer"], "classes": plan["classes"]},
        settings={name: settings[name] for name in SHARD_SETTINGS},
    )
    return finish(output, manifest, PLAN)


# What shaped the shards (recorded in the manifest; the datamodule refuses others for tokenizer and length).
SHARD_SETTINGS = (
    "text_column",
    "label_column",
    "group_column",
    "tokenizer",
    "vocab_size",
    "max_length",
    "val_fraction",
    "test_fraction",
    "seed",
)


# -- reading --------------------------------------------------------------------------------------------------


class ShardTexts(ShardSamples):
    """One split of prepared texts, read by DataLoader workers: (sample, epoch) pairs -> (token ids (T,)
    int64, label)."""

    def item(self, sample: dict[str, Any], epoch: int) -> tuple[torch.Tensor, int]:
        return torch.from_numpy(np.asarray(sample["tokens"], dtype=np.int64)), int(sample["label"])


class BucketedOrder(ChunkedOrder):
    """`ChunkedOrder` whose batches hold texts of similar length, so little compute goes to padding: each
    window of `window` samples of the rank's part is sorted by length (`lengths`, (N,) tokens per sample) and
    cut into the batch sizes ChunkedOrder gives, and, when shuffling, the batches are shuffled (as
    `batches.IndexBatches` does with its pools). Still every sample once and equal batch counts across ranks."""

    def __init__(self, chunk_sizes: Sequence[int], batch_size: int, lengths: torch.Tensor, **options: Any) -> None:
        super().__init__(chunk_sizes, batch_size, **options)
        if len(lengths) != self.num_samples:
            raise ConfigError(f"{len(lengths)} lengths for {self.num_samples} samples; prepare the dataset again")
        self.lengths = lengths

    def batches(self) -> list[torch.Tensor]:
        batches = super().batches()
        if not batches:
            return batches
        mine = torch.cat(batches)
        pools = [pool[self.lengths[pool].argsort(stable=True)] for pool in mine.split(self.window)]
        bucketed = list(torch.cat(pools).split([len(batch) for batch in batches]))
        if self.shuffle:
            bucketed = [bucketed[i] for i in torch.randperm(len(bucketed), generator=self.generator()).tolist()]
        return bucketed
