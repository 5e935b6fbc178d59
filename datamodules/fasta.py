"""FASTA files of the user's: records, and their labels from the header, a CSV beside them, or one file per class.

A record is a header line `>id description` and the sequence lines below it, joined (line breaks and spaces
inside a sequence carry no meaning). Every mistake is a `ConfigError` naming the file, the record and its
line: no '>' before the first sequence, a record without sequence, the same id twice, a record without a
label, a label table that misses a record or names one that is not there.
"""

from __future__ import annotations

import re
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

    def where(self) -> str:
        return f"{self.path} record {self.id} (line {self.line})"


def read_fasta(path: Path) -> list[Record]:
    """Every record of a FASTA file (UTF-8 checked, line ends normalised, an empty file refused)."""
    return parse_fasta(read_text_file(path), path)


def parse_fasta(text: str, path: Path) -> list[Record]:
    """Every record of FASTA text, in order; ';' comment lines and blank lines are skipped."""
    records: list[Record] = []
    parts: list[str] = []
    for number, line in enumerate(text.split("\n"), 1):
        line = line.strip()
        if not line or line.startswith(";"):
            continue
        if line.startswith(">"):
            finish(records, parts)
            header = line[1:].strip()
            if not header:
                raise ConfigError(f"{path} line {number}: a header without an id; write >id before each sequence")
            records.append(Record(header.split()[0], header, "", path, number))
            parts = []
        elif not records:
            raise ConfigError(
                f"{path} line {number} holds sequence before any '>' header: not FASTA; "
                "each record starts with a line >id"
            )
        else:
            parts.append("".join(line.split()))
    finish(records, parts)
    if not records:
        raise ConfigError(f"{path} has no FASTA records; each record starts with a line >id")
    return records


def finish(records: list[Record], parts: list[str]) -> None:
    """Give the last record its sequence lines; a record with none is a mistake (a header left behind)."""
    if records and not records[-1].sequence:
        records[-1].sequence = "".join(parts)
        if not records[-1].sequence:
            raise ConfigError(f"{records[-1].where()} has no sequence; remove the header or add its sequence")


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
    """Label each record from its header: the text after the last '|' of the id (`>seq7|promoter`), or
    the first group of `pattern` searched in the whole header (e.g. `class=(\\w+)`)."""
    regex = compile_pattern(pattern) if pattern else None
    for record in records:
        if regex is not None:
            match = regex.search(record.header)
            label = (match.group(1) or "").strip() if match else ""
            if not label:
                raise ConfigError(
                    f"{record.where()}: label_pattern {pattern!r} finds no label in header {record.header!r}"
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
    rows = read_table(table, [id_column, label_column])
    by_id: dict[str, tuple[str, int]] = {}
    for row, line in zip(rows.rows, rows.lines, strict=True):
        record_id, label = row[id_column].strip(), row[label_column].strip()
        if record_id in by_id:
            raise ConfigError(f"{table} line {line} repeats id {record_id} of line {by_id[record_id][1]}")
        by_id[record_id] = (label, line)
    missing = [record for record in records if record.id not in by_id]
    if missing:
        named = ", ".join(record.id for record in missing[:3]) + (" ..." if len(missing) > 3 else "")
        raise ConfigError(
            f"{table} has no label for {len(missing)} record(s) of {missing[0].path}: {named}; "
            f"add a row with its {id_column} and {label_column}"
        )
    known = {record.id for record in records}
    extra = [(record_id, line) for record_id, (_, line) in by_id.items() if record_id not in known]
    if extra:
        record_id, line = extra[0]
        raise ConfigError(
            f"{table} line {line} labels {record_id}, which no record of the FASTA file has "
            f"({len(extra)} such row(s)); label the records of this file only"
        )
    for record in records:
        record.label = by_id[record.id][0]


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
    if source.is_dir():
        if labels:
            raise ConfigError(
                f"{source} is a folder of one file per class: its labels are the file names; drop --data.labels"
            )
        records = []
        for path in fasta_files(source):
            for record in read_fasta(path):
                record.label = path.stem
                records.append(record)
        check_unique(records)
        return records
    records = read_fasta(source)
    if labels:
        check_unique(records)
        if not Path(labels).is_file():
            raise ConfigError(
                f"label table {labels} not found; give a CSV/TSV/JSONL of ids and labels in --data.labels"
            )
        labels_from_table(records, Path(labels), id_column, label_column)
    else:
        labels_from_headers(records, label_pattern)
    check_unique(records)
    return records
