"""Biological sequence classification: DNA or protein FASTA records with labels -> k-mer token batches, held in
memory or, when too big for it, streamed from prepared shards (`python -m experiments.prepare FILE DIR --kind
fasta`, datamodules/fasta_shards.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from datamodules.bio_sources import chromosome_split, oct4_mafk_texts
from datamodules.fasta import Record, check_unique, fasta_files, parse_fasta, read_labelled
from datamodules.fasta_shards import KIND, SHARD_SETTINGS, ShardSequences, encode_record, prepare_fasta
from datamodules.kmers import AlphabetKind, KmerTokenizer, UnknownPolicy, reverse_complement
from datamodules.prepared import Manifest
from datamodules.sequence_base import SequenceDataModule, pad
from datamodules.sequence_streaming import Loading, PadBatch, StreamsPreparedSequences
from datamodules.splits import group_split
from validation import ConfigError, check_range

BUILTIN = "oct4_mafk"  # the built-in source (`bio_sources`); any other is a FASTA file or a folder
# Peak memory of the in-memory path per byte of FASTA (an estimate, not measured: the file's bytes and text,
# each record's letters, and int64 token ids per letter for k=1).
IN_MEMORY_OVERHEAD = 12


class FastaDataModule(StreamsPreparedSequences, SequenceDataModule):
    """Labelled sequences -> batches (tokens (B, T) padded with 0, labels (B,)); one token per k-mer.

    Args:
        source: "oct4_mafk" (7,997 human DNA regions of 200 bp bound by Oct4 or by MafK, split by
            chromosome; `datamodules.bio_sources`), a FASTA file of your own, or a folder with one FASTA file
            per class (the class is the file's name without its suffix), or a folder prepared from either by
            `python -m experiments.prepare SOURCE DIR --kind fasta` (streamed; its split, labels and classes are
            the folder's, and `alphabet`, `unknown`, `k`, `stride` and `max_length` must be those it was
            prepared with).
        labels: a CSV/TSV/JSONL table of record ids and labels for a FASTA file whose headers hold none.
        id_column: the table's column of record ids (a header's first word, without '>').
        label_column: the table's column of labels.
        label_pattern: a regular expression whose first group is the label, searched in each header; without
            it (and without a table) a header is `>id|label`.
        alphabet: "dna" (ACGT, N; U read as T) or "protein" (20 amino acids, X).
        unknown: letters outside the alphabet that stand for several (IUPAC codes such as R or Y, protein
            codes B Z J U O): "error" names the record and position; "mask" reads them as N (X).
        k: letters per token (1: one token per letter).
        stride: letters between the starts of consecutive tokens: 1 overlaps the k-mers, k cuts the sequence
            into words of k letters (k times fewer tokens: faster for recurrent models).
        reverse_complement: probability that a training sequence is replaced by its other strand (DNA only):
            a binding site reads the same on either strand.
        max_length: sequences are cut to this many tokens.
        batch_size: training batch size; evaluation batches are twice as large.
        bucket: batch sequences of similar length together.
        val_fraction: share of your records held out for validation (the built-in split is fixed).
        test_fraction: share of your records held out for testing.
        seed: seed of the split of your records and of the shuffling order.
        loading: how your records reach training: "memory", "streaming" (from prepared shards, read in
            DataLoader workers, each rank its own part; a source is prepared on first use into the cache) or
            "auto" (a prepared folder streams; a source streams when the in-memory path would need more than
            half of the memory available to each process). oct4_mafk is held in memory.
        workers: DataLoader worker processes per training process when streaming (default: the CPUs of the
            process shared among the processes of the machine, at most 8).

    Streamed records keep the file's order within a split (in memory: the classes in turn); reverse complements
    are drawn per record from (seed, epoch, record) in the DataLoader workers.
    """

    model_facts = ("vocab_size", "pad_id", "num_classes")
    input_kind = "sequences"
    prepared_kind = KIND
    in_memory_overhead = IN_MEMORY_OVERHEAD
    shard_settings = SHARD_SETTINGS
    raw_source = "a FASTA file or a folder of one FASTA file per class"

    def __init__(
        self,
        source: str = BUILTIN,
        labels: str | None = None,
        id_column: str = "id",
        label_column: str = "label",
        label_pattern: str | None = None,
        alphabet: AlphabetKind = "dna",
        unknown: UnknownPolicy = "error",
        k: int = 1,
        stride: int = 1,
        reverse_complement: float = 0.0,
        max_length: int = 1000,
        batch_size: int = 64,
        bucket: bool = True,
        val_fraction: float = 0.1,
        test_fraction: float = 0.1,
        seed: int = 0,
        loading: Loading = "auto",
        workers: int | None = None,
    ) -> None:
        super().__init__(batch_size, seed, bucket)
        check_range("k", k, 1, 12)
        check_range("stride", stride, 1, k)
        check_range("reverse_complement", reverse_complement, 0.0, 1.0)
        check_range("max_length", max_length, 1)
        check_range("val_fraction", val_fraction, 0.0, 0.5, low_open=True)
        check_range("test_fraction", test_fraction, 0.0, 0.5, low_open=True)
        if reverse_complement and alphabet != "dna":
            raise ConfigError("reverse_complement needs DNA (--data.alphabet dna); proteins have no other strand")
        if workers is not None:
            check_range("workers", workers, 0)
        self.save_hyperparameters(logger=False)
        self.classes: list[str] = []
        self.sequences: dict[str, list[str]] = {}  # split -> cleaned sequences, for references on the same split
        self.ids: dict[str, list[str]] = {}  # split -> record ids
        self.spans: list[str] = []  # the letters each training record's tokens span, to read its other strand

    def read(self) -> tuple[list[Record], list[str]]:
        """Every labelled record of the source, and the split of each."""
        hp = self.hparams
        if hp["source"] == BUILTIN:
            records = []
            for name, (text, label) in oct4_mafk_texts().items():
                for record in parse_fasta(text, Path(name)):
                    record.label = label
                    records.append(record)
            check_unique(records)
            return records, [chromosome_split(record.id) for record in records]
        source = Path(hp["source"])
        if not source.exists():
            raise ConfigError(
                f"FASTA source {source} not found; give a FASTA file, a folder of one FASTA file per class, "
                f"or {BUILTIN}"
            )
        records = read_labelled(source, hp["labels"], hp["label_pattern"], hp["id_column"], hp["label_column"])
        ids = [record.id for record in records]
        return records, group_split(ids, hp["val_fraction"], hp["test_fraction"], hp["seed"])

    def build(self) -> None:
        hp = self.hparams
        if self.shards is not None:
            self.open_prepared(self.shards)
            return
        records, assignment = self.read()
        self.tokenizer = tokenizer = KmerTokenizer(hp["alphabet"], hp["k"], hp["stride"])
        # Every record is checked before the split, so a mistake is found whichever split it falls in.
        tokens = [self.encode_record(record) for record in records]
        by_split = {name: [i for i, a in enumerate(assignment) if a == name] for name in ("train", "val", "test")}
        # A fixed order within each split that takes the classes in turn, each in a random order: files often
        # list one class after another, and the first validation examples (W&B's sample table) should show all.
        generator = torch.Generator().manual_seed(hp["seed"])
        for name, members in by_split.items():
            shuffled = [members[i] for i in torch.randperm(len(members), generator=generator)]
            count: dict[str, int] = {}
            turns = []  # each record's place among the shuffled records of its class
            for i in shuffled:
                count[records[i].label] = count.get(records[i].label, 0) + 1
                turns.append(count[records[i].label])
            by_split[name] = [i for _, i in sorted(zip(turns, shuffled, strict=True), key=lambda pair: pair[0])]
        self.classes = sorted({records[i].label for i in by_split["train"]})
        if len(self.classes) < 2:
            raise ConfigError(
                f"the training records of {hp['source']} have {len(self.classes)} label(s); need 2 or more"
            )
        unknown = sorted({records[i].label for i in by_split["val"] + by_split["test"]} - set(self.classes))
        if unknown:
            raise ConfigError(f"labels {', '.join(unknown)} occur only outside the training split; merge or drop them")
        label_ids = {label: index for index, label in enumerate(self.classes)}
        for name, members in by_split.items():
            self.splits[name] = (
                [tokens[i] for i in members],
                torch.tensor([label_ids[records[i].label] for i in members]),
            )
            self.sequences[name] = [records[i].sequence for i in members]
            self.ids[name] = [records[i].id for i in members]
            self.lengths[name] = torch.tensor([len(tokens[i]) for i in members])
        if hp["reverse_complement"]:
            self.spans = [records[i].sequence[: tokenizer.covered(len(tokens[i]))] for i in by_split["train"]]

    def encode_record(self, record: Record) -> torch.Tensor:
        """A record's letters, checked and cleaned in place -> its token ids (T,), cut to max_length."""
        hp, tokenizer = self.hparams, self.tokenizer
        assert isinstance(tokenizer, KmerTokenizer)  # made by `build`, or restored from a checkpoint
        return torch.tensor(encode_record(record, tokenizer, hp["unknown"], hp["max_length"]), dtype=torch.long)

    def encode_inputs(self, items: list[Record]) -> torch.Tensor:
        return pad([self.encode_record(record) for record in items])  # (B, T)

    def inference_state(self) -> dict[str, Any]:
        return {**super().inference_state(), "classes": self.classes}

    def load_inference_state(self, state: dict[str, Any]) -> None:
        super().load_inference_state(state)
        self.classes = list(state["classes"])

    def fetch(self, split: str, indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        tokens, labels = self.splits[split]
        batch = [tokens[i] for i in indices.tolist()]
        if split == "train" and self.spans:
            # The global generator: seeded by the run, its state saved in checkpoints (resumable like the rest).
            flip = (torch.rand(len(batch)) < self.hparams["reverse_complement"]).tolist()
            for row, (index, flipped) in enumerate(zip(indices.tolist(), flip, strict=True)):
                if flipped:  # the other strand of the same letters: as many tokens (stride-aligned)
                    other = self.tokenizer.encode(reverse_complement(self.spans[index]))  # type: ignore[union-attr]
                    batch[row] = torch.tensor(other, dtype=torch.long)
        return pad(batch), labels[indices]

    @property
    def num_classes(self) -> int:
        self.ready()
        return len(self.classes)

    # Streaming from prepared shards (`StreamsPreparedSequences`).
    def built_in(self) -> str | None:
        return "in memory (built-in)" if self.hparams["source"] == BUILTIN else None

    def raw_size(self, path: Path) -> int:
        return sum(file.stat().st_size for file in fasta_files(path)) if path.is_dir() else path.stat().st_size

    def checked_settings(self, settings: dict[str, Any]) -> tuple[str, ...]:
        return ("alphabet", "unknown", "k", "stride", "max_length")

    def prepare_shards(self, source: Path, output: Path, **settings: Any) -> Manifest:
        return prepare_fasta(source, output, **settings)

    def open_state(self, manifest: Manifest) -> None:
        self.tokenizer = KmerTokenizer.from_json(manifest.state["tokenizer"])
        self.classes = list(manifest.state["classes"])

    def shard_split(self, split: str, folder: Path, digests: dict[str, str]) -> ShardSequences:
        assert isinstance(self.tokenizer, KmerTokenizer)  # from the manifest (`open_state`)
        flip = self.hparams["reverse_complement"] if split == "train" else 0.0
        return ShardSequences(folder, digests, self.tokenizer, flip, self.seed)

    def collate(self) -> PadBatch:
        return PadBatch(self.pad_id)
