"""Translation pairs (a TSV, CSV or JSON Lines file of `source` and `target` of any size) as prepared shards
(LitData chunks), streamed by DataLoader workers with flat memory.

    <output>/firstlight.json           manifest: its state is the datamodule's inference state (the tokenizer)
    <output>/<split>/...               samples {"source": int32 ids (text, <eos>), "target": int32 ids (<bos> text
                                       <eos>), "index": the pair's position in its split}; lengths.npy: each
                                       source's token count (`sample_shards`)

The file is read as a stream of rows (`text_shards.TableStream`: `read_table`'s rules). Row n (0 for the first)
goes to train, val or test by a seeded hash of n (`splits.split_of`), which needs no shuffle of the whole
file; `Seq2SeqDataModule` splits a file of yours in memory the same way, so both hold the same pairs (its
generated and dictionary sources keep their shuffled split). A pair longer than `max_chars` is left out after
the split, so other pairs keep theirs. One pass checks every row, counts the splits and trains the tokenizer on
the training pairs as they stream by; workers then encode parts of `part_rows` rows, resumably.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from datamodules.image_shards import claim_shard_folder
from datamodules.prepared import Manifest, fingerprint
from datamodules.sample_shards import PartWriter, ShardSamples, encode_parts, finish, read_plan, start_prepare
from datamodules.special_tokens import BOS_ID, EOS_ID
from datamodules.splits import SPLITS, split_of
from datamodules.text_shards import PART_ROWS, TableStream, train_streaming
from datamodules.token_corpus import Progress, check_text_file
from datamodules.tokenization import Tokenizer, tokenizer_from_json
from validation import ConfigError, check_range

KIND = "pairs"
COLUMNS = ("source", "target")
PLAN = ".firstlight-pairs-plan.json"  # the scan's result and the tokenizer, for a prepare that goes on
# What shaped the shards (recorded in the manifest; the datamodule refuses a prepared folder of others).
SHARD_SETTINGS = ("tokenizer", "vocab_size", "max_chars", "val_fraction", "test_fraction", "seed")


def pair_split(number: int, settings: dict[str, Any]) -> str:
    """The split of row `number` (0 for the first) of a file of pairs."""
    return split_of(str(number), settings["val_fraction"], settings["test_fraction"], settings["seed"])


def kept(source: str, target: str, max_chars: int | None) -> bool:
    """Whether a pair is short enough to keep (`max_chars`: None keeps every pair)."""
    return max_chars is None or max(len(source), len(target)) <= max_chars


def check_counts(source: str, counts: dict[str, int]) -> None:
    if not all(counts.values()):
        raise ConfigError(f"{source} has too few pairs ({sum(counts.values())}) for train, val and test splits")


def encode_pair(tokenizer: Tokenizer, source: str, target: str) -> tuple[list[int], list[int]]:
    """A pair's ids as the model reads them: (source <eos>, <bos> target <eos>)."""
    return [*tokenizer.encode(source), EOS_ID], [BOS_ID, *tokenizer.encode(target), EOS_ID]


class Scan:
    """The pass over the file: `training_texts()` yields each training pair's source and target, in order, for
    the tokenizer's trainer, and records each split's size and where each part starts."""

    def __init__(self, source: Path, settings: dict[str, Any], say: Progress) -> None:
        self.source, self.settings, self.say = source, settings, say
        self.counts = dict.fromkeys(SPLITS, 0)
        self.parts: list[dict[str, Any]] = []  # start (byte), line, rows, first (split -> its first pair's index)
        self.header: list[str] | None = None

    def training_texts(self) -> Iterator[str]:
        s = self.settings
        rows = TableStream(self.source, COLUMNS)
        read = 0
        for number, row in enumerate(rows):
            if number % s["part_rows"] == 0:
                self.parts.append({"start": row.begin, "line": row.begin_line, "rows": 0, "first": dict(self.counts)})
            self.parts[-1]["rows"] += 1
            self.say.advance(rows.lines.end - read)
            read = rows.lines.end
            source, target = (row.cells[column] for column in COLUMNS)
            if not kept(source, target, s["max_chars"]):
                continue
            split = pair_split(number, s)
            self.counts[split] += 1
            if split == "train":
                yield source
                yield target
        self.header = rows.header
        size = self.source.stat().st_size
        for part, after in zip(self.parts, [*(part["start"] for part in self.parts[1:]), size], strict=True):
            part["bytes"] = after - part["start"]


def make_plan(source: Path, settings: dict[str, Any], say: Progress) -> dict[str, Any]:
    scan = Scan(source, settings, say)
    say.start("reading and training the tokenizer", source.stat().st_size)
    tokenizer = train_streaming(settings["tokenizer"], scan.training_texts(), settings["vocab_size"])
    say.finish()
    check_counts(str(source), scan.counts)
    return {
        "settings": settings,
        "header": scan.header,
        "counts": scan.counts,
        "parts": scan.parts,
        "tokenizer": tokenizer.to_json(),
    }


WORKER_TOKENIZER: list[Tokenizer] = []  # a worker's tokenizer, set by `start_worker`


def start_worker(tokenizer_json: str) -> None:
    WORKER_TOKENIZER[:] = [tokenizer_from_json(tokenizer_json)]


def write_part(job: tuple[str, str, int, dict[str, Any], dict[str, Any]]) -> int:
    """Encode part `number` of the file: its pairs of each split not written yet. Returns its bytes."""
    source, output_name, number, part, plan = job  # plan: its settings and header
    settings = plan["settings"]
    writer = PartWriter(Path(output_name), number, part["first"])
    rows = TableStream(Path(source), COLUMNS, part["start"], part["line"], plan["header"])
    for offset, row in enumerate(itertools.islice(rows, part["rows"])):
        source_text, target_text = (row.cells[column] for column in COLUMNS)
        if not kept(source_text, target_text, settings["max_chars"]):
            continue
        split = pair_split(number * settings["part_rows"] + offset, settings)
        if not writer.wanted(split):
            writer.add(split, {}, 0)
            continue
        source_ids, target_ids = encode_pair(WORKER_TOKENIZER[0], source_text, target_text)
        sample = {"source": np.asarray(source_ids, np.int32), "target": np.asarray(target_ids, np.int32)}
        writer.add(split, sample, len(source_ids))
    writer.close()
    return int(part["bytes"])


def prepare_pairs(
    source: Path,
    output: Path,
    *,
    tokenizer: str = "char",
    vocab_size: int = 8000,
    max_chars: int | None = None,
    val_fraction: float = 0.1,
    test_fraction: float = 0.1,
    seed: int = 0,
    workers: int | None = None,
    overwrite: bool = False,
    progress: bool = True,
    part_rows: int = PART_ROWS,
) -> Manifest:
    """Prepare a file of pairs as shards in `output` (see the module's docstring), in bounded memory, with
    `workers` processes; resumable. The arguments are `Seq2SeqDataModule`'s. Returns the manifest written."""
    source, output = Path(source).resolve(), Path(output).resolve()
    if tokenizer not in ("char", "word", "bpe"):
        raise ConfigError(f"tokenizer must be 'char', 'word' or 'bpe', not {tokenizer!r}")
    check_range("vocab_size", vocab_size, 8)
    if max_chars is not None:
        check_range("max_chars", max_chars, 1)
    check_range("val_fraction", val_fraction, 0.0, 0.5, low_open=True)
    check_range("test_fraction", test_fraction, 0.0, 0.5, low_open=True)
    check_range("part_rows", part_rows, 1)
    check_text_file(source)
    settings: dict[str, Any] = {"kind": KIND, "source": str(source), "fingerprint": fingerprint(source)}
    settings |= {"tokenizer": tokenizer, "vocab_size": vocab_size, "max_chars": max_chars}
    settings |= {"val_fraction": val_fraction, "test_fraction": test_fraction, "seed": seed, "part_rows": part_rows}
    claim_shard_folder(output, settings, overwrite)
    say = Progress(source.name, progress)
    plan = read_plan(output, settings, PLAN)
    if plan is None:
        plan = make_plan(source, settings, say)  # nothing is written before the file has been read through
        start_prepare(output, settings, plan, PLAN)
    shared = {name: plan[name] for name in ("settings", "header")}
    jobs = [(str(source), str(output), number, part, shared) for number, part in enumerate(plan["parts"])]
    encode_parts(output, jobs, write_part, workers, say, start_worker, (plan["tokenizer"],))
    manifest = Manifest(
        kind=KIND,
        source=str(source),
        fingerprint=settings["fingerprint"],
        splits=plan["counts"],
        state={"tokenizer": plan["tokenizer"]},
        settings={name: settings[name] for name in SHARD_SETTINGS},
    )
    return finish(output, manifest, PLAN)


class ShardPairs(ShardSamples):
    """One split of prepared pairs: (sample, epoch) pairs -> (source ids (S,), target ids (T,)) int64."""

    def item(self, sample: dict[str, Any], epoch: int) -> tuple[torch.Tensor, torch.Tensor]:
        source, target = (np.asarray(sample[name], dtype=np.int64) for name in COLUMNS)
        return torch.from_numpy(source), torch.from_numpy(target)
