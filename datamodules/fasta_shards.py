"""Labelled FASTA records (a FASTA file of any size, or a folder of one FASTA file per class) as prepared shards
(LitData chunks), streamed by DataLoader workers with flat memory.

    <output>/firstlight.json           manifest: its state is the datamodule's inference state (the k-mer
                                       tokenizer, the classes)
    <output>/<split>/...               samples {"letters": uint8, the cleaned letters that the record's tokens
                                       span (cut at max_length tokens), "label": class id, "index": the record's
                                       position in its split}; lengths.npy: each record's token count
                                       (`sample_shards`)

Letters, not token ids, are stored (a byte a letter, not four a token) and tokenized as they are read, so a
training record can be read from its other strand (`reverse_complement`) there, as in memory.

The files are read as a stream of lines (`text_shards.Lines`: UTF-8 checked, line ends as text mode reads them),
one record at a time (`fasta.fasta_records`), with the in-memory path's rules: labels from headers, a table
(held in memory: an id and a label per record) or the file names; every record cleaned and tokenized
(`encode_record`), each split by a seeded hash of its id (`splits.split_of`), so both paths hold the same
records. Ids must be unique: the scan keeps a 64-bit hash per record and, only when two hashes agree, reads
the ids again to name the record. The scan checks everything before anything is written; workers then encode
parts of `part_records` records (never spanning two files), resumably.
"""

from __future__ import annotations

import itertools
import random
from array import array
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from datamodules.fasta import LabelTable, Record, check_unique, fasta_files, fasta_records, labeller
from datamodules.image_shards import claim_shard_folder
from datamodules.kmers import AlphabetKind, KmerTokenizer, UnknownPolicy, clean_sequence, reverse_complement
from datamodules.prepared import Manifest, fingerprint
from datamodules.sample_shards import PartWriter, ShardSamples, encode_parts, finish, read_plan, start_prepare
from datamodules.splits import SPLITS, check_splits, split_of
from datamodules.text_shards import Lines
from datamodules.token_corpus import Progress, check_text_file, mixed
from validation import ConfigError, check_range

KIND = "fasta"
PART_RECORDS = 16_384  # records per unit of work (and of resumption)
PLAN = ".firstlight-fasta-plan.json"  # the scan's result, for a prepare that goes on
# What shaped the shards (recorded in the manifest; the datamodule refuses a prepared folder whose letters and
# tokens differ from its settings).
SHARD_SETTINGS = (
    "labels",
    "id_column",
    "label_column",
    "label_pattern",
    "alphabet",
    "unknown",
    "k",
    "stride",
    "max_length",
    "val_fraction",
    "test_fraction",
    "seed",
)


def encode_record(record: Record, tokenizer: KmerTokenizer, unknown: UnknownPolicy, max_length: int) -> list[int]:
    """A record's letters, checked and cleaned in place -> its token ids, cut to max_length (in memory and
    prepared alike)."""
    record.sequence = clean_sequence(record.sequence, tokenizer.kind, unknown, record.where())
    ids = tokenizer.encode(record.sequence)[:max_length]
    if not ids:
        raise ConfigError(f"{record.where()} has {len(record.sequence)} letter(s), fewer than k={tokenizer.k}")
    return ids


def source_files(source: Path) -> list[Path]:
    """The FASTA files of a source: itself, or a folder's one file per class."""
    if source.is_dir():
        return fasta_files(source)
    check_text_file(source)
    return [source]


def read_records(files: list[Path], label: Callable[[Record], bool]) -> Iterator[tuple[int, Record, Lines]]:
    """(file number, record, its file's lines) for every record of the files, labelled where `label` can."""
    for number, path in enumerate(files):
        lines = Lines(path)
        for record in fasta_records(lines, path):
            label(record)
            yield number, record, lines


def record_split(record_id: str, settings: dict[str, Any]) -> str:
    """The split of a record, as `FastaDataModule` splits a file of yours."""
    return split_of(record_id, settings["val_fraction"], settings["test_fraction"], settings["seed"])


def make_plan(source: Path, files: list[Path], settings: dict[str, Any], say: Progress) -> dict[str, Any]:
    """Read every record once: check it, count the splits and their labels, and note where each part starts."""
    s = settings
    label = labeller(source, s["labels"], s["label_pattern"], s["id_column"], s["label_column"])
    tokenizer = KmerTokenizer(s["alphabet"], s["k"], s["stride"])
    counts = dict.fromkeys(SPLITS, 0)
    labels: dict[str, set[str]] = {split: set() for split in SPLITS}
    parts: list[dict[str, Any]] = []
    ids = array("q")  # a hash of every record's id, for the check that none repeats
    missing: list[Record] = []  # records the label table has no row for (the first few), and how many
    unlabelled = 0
    say.start("reading", sum(path.stat().st_size for path in files))
    read, last_file = 0, -1
    for file, record, lines in read_records(files, label):
        if file != last_file or parts[-1]["records"] == s["part_records"]:  # a part never spans two files
            parts.append(
                {"file": file, "start": record.start, "line": record.line, "records": 0, "first": dict(counts)}
            )
        if file != last_file:
            read, last_file = 0, file
        parts[-1]["records"] += 1
        say.advance(lines.end - read)
        read = lines.end
        if not record.label:
            unlabelled += 1
            missing += [record] if len(missing) < 3 else []
            continue
        ids.append(hash(record.id))
        encode_record(record, tokenizer, s["unknown"], s["max_length"])
        split = record_split(record.id, s)
        counts[split] += 1
        labels[split].add(record.label)
    say.finish()
    if isinstance(label, LabelTable):
        label.check(missing, unlabelled)
    check_ids(files, ids, label)
    for part, after in zip(parts, [*parts[1:], None], strict=True):
        end = files[part["file"]].stat().st_size if after is None or after["file"] != part["file"] else after["start"]
        part["bytes"] = end - part["start"]
    classes = check_splits(str(source), counts, labels, "records")
    return {
        "settings": settings,
        "files": [str(path) for path in files],
        "counts": counts,
        "classes": classes,
        "parts": parts,
        "tokenizer": tokenizer.to_json(),
    }


def check_ids(files: list[Path], ids: array, label: Callable[[Record], bool]) -> None:
    """Refuse a record whose id an earlier one has (`fasta.check_unique`'s message), reading the files again
    only when two ids' hashes agree."""
    hashes = np.sort(np.frombuffer(ids, dtype=np.int64))
    repeated = set(hashes[1:][hashes[1:] == hashes[:-1]].tolist())
    if repeated:
        check_unique([record for _, record, _ in read_records(files, label) if hash(record.id) in repeated])


WORKER: dict[str, Any] = {}  # a worker's tokenizer and labeller, set by `start_worker`


def start_worker(source: str, settings: dict[str, Any]) -> None:
    s = settings
    WORKER["label"] = labeller(Path(source), s["labels"], s["label_pattern"], s["id_column"], s["label_column"])
    WORKER["tokenizer"] = KmerTokenizer(s["alphabet"], s["k"], s["stride"])


def write_part(job: tuple[str, str, int, dict[str, Any], dict[str, Any]]) -> int:
    """Encode part `number`: its records of each split not written yet. Returns its bytes of the files."""
    _, output_name, number, part, plan = job  # plan: its settings, files and classes
    settings, tokenizer, label = plan["settings"], WORKER["tokenizer"], WORKER["label"]
    label_ids = {name: index for index, name in enumerate(plan["classes"])}
    writer = PartWriter(Path(output_name), number, part["first"])
    path = Path(plan["files"][part["file"]])
    records = fasta_records(Lines(path, part["start"], part["line"]), path, part["line"])
    for record in itertools.islice(records, part["records"]):
        label(record)
        split = record_split(record.id, settings)
        if not writer.wanted(split):
            writer.add(split, {}, 0)
            continue
        ids = encode_record(record, tokenizer, settings["unknown"], settings["max_length"])
        letters = record.sequence[: tokenizer.covered(len(ids))].encode("ascii")
        sample = {"letters": np.frombuffer(letters, np.uint8), "label": label_ids[record.label]}
        writer.add(split, sample, len(ids))
    writer.close()
    return int(part["bytes"])


def prepare_fasta(
    source: Path,
    output: Path,
    *,
    labels: str | None = None,
    id_column: str = "id",
    label_column: str = "label",
    label_pattern: str | None = None,
    alphabet: AlphabetKind = "dna",
    unknown: UnknownPolicy = "error",
    k: int = 1,
    stride: int = 1,
    max_length: int = 1000,
    val_fraction: float = 0.1,
    test_fraction: float = 0.1,
    seed: int = 0,
    workers: int | None = None,
    overwrite: bool = False,
    progress: bool = True,
    part_records: int = PART_RECORDS,
) -> Manifest:
    """Prepare a FASTA file, or a folder of one FASTA file per class, as shards in `output` (see the module's
    docstring), in bounded memory, with `workers` processes; resumable. The arguments are `FastaDataModule`'s.
    Returns the manifest written."""
    source, output = Path(source).resolve(), Path(output).resolve()
    if alphabet not in ("dna", "protein"):
        raise ConfigError(f"alphabet must be 'dna' or 'protein', not {alphabet!r}")
    if unknown not in ("error", "mask"):
        raise ConfigError(f"unknown must be 'error' or 'mask', not {unknown!r}")
    check_range("k", k, 1, 12)
    check_range("stride", stride, 1, k)
    check_range("max_length", max_length, 1)
    check_range("val_fraction", val_fraction, 0.0, 0.5, low_open=True)
    check_range("test_fraction", test_fraction, 0.0, 0.5, low_open=True)
    check_range("part_records", part_records, 1)
    if not source.exists():
        raise ConfigError(f"FASTA source {source} not found; give a FASTA file or a folder of one FASTA file per class")
    files = source_files(source)
    table = Path(labels).resolve() if labels else None
    settings: dict[str, Any] = {"kind": KIND, "source": str(source), "fingerprint": fingerprint(source)}
    settings |= {"labels": str(table) if table else None, "id_column": id_column, "label_column": label_column}
    settings |= {"label_pattern": label_pattern, "alphabet": alphabet, "unknown": unknown, "k": k, "stride": stride}
    settings |= {"max_length": max_length, "val_fraction": val_fraction, "test_fraction": test_fraction}
    settings |= {"seed": seed, "part_records": part_records}
    settings["labels_fingerprint"] = fingerprint(table) if table and table.is_file() else None
    claim_shard_folder(output, settings, overwrite)
    say = Progress(source.name, progress)
    plan = read_plan(output, settings, PLAN)
    if plan is None:
        plan = make_plan(source, files, settings, say)  # nothing is written before every record has been read
        start_prepare(output, settings, plan, PLAN)
    shared = {name: plan[name] for name in ("settings", "files", "classes")}
    jobs = [(str(source), str(output), number, part, shared) for number, part in enumerate(plan["parts"])]
    encode_parts(output, jobs, write_part, workers, say, start_worker, (str(source), settings))
    manifest = Manifest(
        kind=KIND,
        source=str(source),
        fingerprint=settings["fingerprint"],
        splits=plan["counts"],
        state={"tokenizer": plan["tokenizer"], "classes": plan["classes"]},
        settings={name: settings[name] for name in SHARD_SETTINGS},
    )
    return finish(output, manifest, PLAN)


class ShardSequences(ShardSamples):
    """One split of prepared records: (sample, epoch) pairs -> (token ids (T,) int64, label). With
    `reverse_complement` (a probability, training only) a record is read from its other strand, drawn from
    (seed, epoch, sample): any worker, any number of workers and a resumed run draw the same."""

    def __init__(
        self,
        folder: Path,
        digests: dict[str, str],
        tokenizer: KmerTokenizer,
        reverse_complement: float = 0.0,
        seed: int = 0,
    ) -> None:
        super().__init__(folder, digests)
        self.tokenizer = tokenizer
        self.reverse_complement = reverse_complement
        self.seed = seed

    def item(self, sample: dict[str, Any], epoch: int) -> tuple[torch.Tensor, int]:
        letters = np.asarray(sample["letters"], np.uint8).tobytes().decode("ascii")
        if self.reverse_complement:
            draw = random.Random(mixed(self.seed, epoch, int(sample["index"]))).random()
            if draw < self.reverse_complement:  # the other strand of the same letters: as many tokens
                letters = reverse_complement(letters)
        return torch.tensor(self.tokenizer.encode(letters), dtype=torch.long), int(sample["label"])
