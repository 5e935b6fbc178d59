"""FASTA files of the user's: records, and their labels from the header, a CSV beside them, or one file per class.

A record is a header line `>id description` and the sequence lines below it, joined (line breaks and spaces
inside a sequence carry no meaning). Every mistake is a `ConfigError` naming the file, the record and its
line: no '>' before the first sequence, a record without sequence, the same id twice, a record without a
label, a label table that misses a record or names one that is not there.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from datamodules.text_sources import read_table, read_text_file
from validation import ConfigError

FASTA_SUFFIXES = (".fa", ".fasta", ".fna", ".faa", ".ffn", ".fas")


@dataclass
class Record:
    """One FASTA record: its id (the header's first word), the whole header, the sequence as written (line
    breaks removed), where it is, and its label once known."""

    id: str
    header: str
    sequence: str
    path: Path
    line: int  # the header's line in the file, 1-based
    label: str = ""
    start: int = 0  # the header's first byte in the file, where the lines were read from a file (`fasta_records`)

    def where(self) -> str:
        return f"{self.path} record {self.id} (line {self.line})"


def read_fasta(path: Path) -> list[Record]:
    """Every record of a FASTA file (UTF-8 checked, line ends normalised, an empty file refused)."""
    return parse_fasta(read_text_file(path), path)


def parse_fasta(text: str, path: Path) -> list[Record]:
    """Every record of FASTA text, in order; ';' comment lines and blank lines are skipped."""
    return list(fasta_records(text.split("\n"), path))


def fasta_records(lines: Iterable[str], path: Path, first_line: int = 1) -> Iterator[Record]:
    """The records of FASTA lines, one at a time (memory holds one record): `parse_fasta`'s rules. `lines` may be
    a file's `text_shards.Lines` (read from a header's byte on, that header's line being `first_line`): each
    record's `start` is then the byte where its header begins, and an empty file is refused as such."""
    record: Record | None = None
    parts: list[str] = []
    start = getattr(lines, "end", 0)
    for number, line in enumerate(lines, first_line):
        line_start, start = start, getattr(lines, "end", 0)
        line = line.strip()
        if not line or line.startswith(";"):
            continue
        if line.startswith(">"):
            if record is not None:
                yield finished(record, parts)
            header = line[1:].strip()
            if not header:
                raise ConfigError(f"{path} line {number}: a header without an id; write >id before each sequence")
            record, parts = Record(header.split()[0], header, "", path, number, start=line_start), []
        elif record is None:
            raise ConfigError(
                f"{path} line {number} holds sequence before any '>' header: not FASTA; "
                "each record starts with a line >id"
            )
        else:
            parts.append("".join(line.split()))
    if record is not None:
        yield finished(record, parts)
    elif not getattr(lines, "text_seen", True):
        raise ConfigError(f"{path} is empty; give a file with text")
    else:
        raise ConfigError(f"{path} has no FASTA records; each record starts with a line >id")


def finished(record: Record, parts: list[str]) -> Record:
    """The record with its sequence lines; a record with none is a mistake (a header left behind)."""
    record.sequence = "".join(parts)
    if not record.sequence:
        raise ConfigError(f"{record.where()} has no sequence; remove the header or add its sequence")
    return record


def check_unique(records: list[Record]) -> None:
    seen: dict[str, Record] = {}
    for record in records:
        if record.id in seen:
            first = seen[record.id]
            raise ConfigError(
                f"{record.where()} repeats the id of {first.path} line {first.line}; give every record its own id"
            )
        seen[record.id] = record


def labels_from_headers(records: list[Record], pattern: str | None) -> None:
    """Label each record from its header (`HeaderLabels`)."""
    label = HeaderLabels(pattern)
    for record in records:
        label(record)


class HeaderLabels:
    """Labels a record from its header: the text after the last '|' of the id (`>seq7|promoter`, then record
    seq7), or the first group of `pattern` searched in the whole header (e.g. `class=(\\w+)`)."""

    def __init__(self, pattern: str | None) -> None:
        self.pattern = pattern
        self.regex = compile_pattern(pattern) if pattern else None

    def __call__(self, record: Record) -> bool:
        if self.regex is not None:
            match = self.regex.search(record.header)
            label = (match.group(1) or "").strip() if match else ""
            if not label:
                raise ConfigError(
                    f"{record.where()}: label_pattern {self.pattern!r} finds no label in header {record.header!r}"
                )
        else:
            record_id, bar, label = record.id.rpartition("|")
            if not bar or not label or not record_id:
                raise ConfigError(
                    f"{record.where()} has no label in its header; write >id|label, give --data.label_pattern, "
                    "a label table (--data.labels labels.csv) or a folder with one FASTA file per class"
                )
            record.id = record_id  # >seq7|promoter is record seq7
        record.label = label
        return True


def compile_pattern(pattern: str) -> re.Pattern[str]:
    try:
        regex = re.compile(pattern)
    except re.error as error:
        raise ConfigError(f"label_pattern {pattern!r} is not a regular expression ({error})") from None
    if regex.groups < 1:
        raise ConfigError(f"label_pattern {pattern!r} needs a group around the label, e.g. 'class=(\\w+)'")
    return regex


def labels_from_table(records: list[Record], table: Path, id_column: str, label_column: str) -> None:
    """Label each record from a CSV/TSV/JSONL table of ids and labels: every record must be in it once, and
    every row must name a record (a row for another file's records is a sign of the wrong pair of files)."""
    labels = LabelTable(table, id_column, label_column)
    labels.check([record for record in records if not labels(record)])


class LabelTable:
    """A table of record ids and their labels (held in memory: an id and a label per record). Calling it labels
    a record, False when the table has no row for it; `check` then refuses a table that missed records or has
    rows for records that were never labelled."""

    def __init__(self, table: Path, id_column: str, label_column: str) -> None:
        self.table, self.id_column, self.label_column = table, id_column, label_column
        rows = read_table(table, [id_column, label_column])
        self.by_id: dict[str, tuple[str, int]] = {}
        for row, line in zip(rows.rows, rows.lines, strict=True):
            record_id, label = row[id_column].strip(), row[label_column].strip()
            if record_id in self.by_id:
                raise ConfigError(f"{table} line {line} repeats id {record_id} of line {self.by_id[record_id][1]}")
            self.by_id[record_id] = (label, line)
        self.used: set[str] = set()

    def __call__(self, record: Record) -> bool:
        found = self.by_id.get(record.id)
        if found is None:
            return False
        record.label = found[0]
        self.used.add(record.id)
        return True

    def check(self, missing: list[Record], count: int | None = None) -> None:
        """Refuse `missing` records (the first few of `count`) and rows that labelled no record."""
        if missing:
            count = len(missing) if count is None else count
            named = ", ".join(record.id for record in missing[:3]) + (" ..." if count > 3 else "")
            raise ConfigError(
                f"{self.table} has no label for {count} record(s) of {missing[0].path}: {named}; "
                f"add a row with its {self.id_column} and {self.label_column}"
            )
        extra = [(record_id, line) for record_id, (_, line) in self.by_id.items() if record_id not in self.used]
        if extra:
            record_id, line = extra[0]
            raise ConfigError(
                f"{self.table} line {line} labels {record_id}, which no record of the FASTA file has "
                f"({len(extra)} such row(s)); label the records of this file only"
            )


def fasta_files(folder: Path) -> list[Path]:
    """The FASTA files of a folder (one per class), sorted by name."""
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in FASTA_SUFFIXES)
    if len(files) < 2:
        raise ConfigError(
            f"{folder} holds {len(files)} FASTA file(s) ({', '.join(FASTA_SUFFIXES)}); "
            "give one file per class, named after the class"
        )
    return files


def read_labelled(
    source: Path, labels: str | None, label_pattern: str | None, id_column: str, label_column: str
) -> list[Record]:
    """The records of `source` with their labels: from one file per class when `source` is a folder, else
    from `labels` (a table) when given, else from the headers."""
    label = labeller(source, labels, label_pattern, id_column, label_column)
    if source.is_dir():
        records = [record for path in fasta_files(source) for record in read_fasta(path) if label(record)]
        check_unique(records)
        return records
    records = read_fasta(source)
    if isinstance(label, LabelTable):
        check_unique(records)
        label.check([record for record in records if not label(record)])
    else:
        labels_from_headers(records, label_pattern)
    check_unique(records)
    return records


def labeller(
    source: Path, labels: str | None, label_pattern: str | None, id_column: str, label_column: str
) -> Callable[[Record], bool]:
    """What labels each record of `source` (True when it could): its file's name for a folder of one file per
    class, a `LabelTable` for `labels`, else `HeaderLabels`."""
    if source.is_dir():
        if labels:
            raise ConfigError(
                f"{source} is a folder of one file per class: its labels are the file names; drop --data.labels"
            )
        return label_by_file
    if labels:
        if not Path(labels).is_file():
            raise ConfigError(
                f"label table {labels} not found; give a CSV/TSV/JSONL of ids and labels in --data.labels"
            )
        return LabelTable(Path(labels), id_column, label_column)
    return HeaderLabels(label_pattern)


def label_by_file(record: Record) -> bool:
    record.label = record.path.stem
    return True
