"""FASTA records streamed from prepared shards: prepare (the in-memory path's records, split by id, tokens and
labels; resumable; bad input in one line), every record once across ranks, reverse complements in the workers,
the datamodule's choice of path, and a run."""

from __future__ import annotations

import random
import re
import shutil
import signal
from pathlib import Path
from typing import Any

import pytest
import torch

import datamodules.fasta_shards as fasta_shards
from datamodules.biosequence import FastaDataModule
from datamodules.fasta_shards import prepare_fasta
from datamodules.image_shards import chunk_sizes
from datamodules.kmers import reverse_complement
from datamodules.prepared import MANIFEST, read_manifest
from datamodules.text_shards import BucketedOrder
from experiments.prepare import main as prepare_command
from tests.helpers import run_cli, run_module
from validation import ConfigError

SPLITS = ("train", "val", "test")
SETTINGS: dict[str, Any] = {"k": 3, "stride": 2, "max_length": 20}  # records run to 60 letters: some are cut


def records(count: int = 300) -> list[tuple[str, str, str]]:
    rng = random.Random(0)
    return [
        (f"seq{i}", "".join(rng.choice("ACGTacgt") for _ in range(rng.randint(5, 60))), rng.choice(["tf", "bg"]))
        for i in range(count)
    ]


def fasta(rows: list[tuple[str, str, str]], header: str = "{id}|{label}") -> str:
    lines = [";comment"]
    for record_id, sequence, label in rows:
        lines += [">" + header.format(id=record_id, label=label), *(sequence[i : i + 15] for i in range(0, 60, 15))]
    return "\r\n".join(line for line in lines if line) + "\r\n\r\n"


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The same 300 records with labels in headers (CRLF line ends), with a label table, and as one file per class."""
    folder = tmp_path_factory.mktemp("fasta")
    rows = records()
    (folder / "headers.fa").write_text(fasta(rows))
    (folder / "plain.fasta").write_text(fasta(rows, "{id} some description"))
    (folder / "labels.tsv").write_text("id\tlabel\n" + "".join(f"{i}\t{label}\n" for i, _, label in rows))
    (folder / "classes").mkdir()
    for label in ("tf", "bg"):
        (folder / "classes" / f"{label}.fa").write_text(fasta([row for row in rows if row[2] == label], "{id}"))
    return {"headers": folder / "headers.fa", "table": folder / "plain.fasta", "folder": folder / "classes"}


def labels_of(kind: str, sources: dict[str, Path]) -> dict[str, Any]:
    return {"labels": str(sources["table"].with_name("labels.tsv"))} if kind == "table" else {}


@pytest.fixture(scope="module")
def prepared(sources: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    output = tmp_path_factory.mktemp("prepared") / "records"
    prepare_fasta(sources["headers"], output, **SETTINGS, workers=1, progress=False, part_records=64)
    return output


def streamed(folder: Path, **options: Any) -> FastaDataModule:
    return FastaDataModule(source=str(folder), **{**SETTINGS, "workers": 0, **options})


def samples(tokens: list[torch.Tensor], labels: list[int]) -> list[tuple[tuple[int, ...], int]]:
    return sorted((tuple(ids.tolist()), label) for ids, label in zip(tokens, labels, strict=True))


@pytest.mark.parametrize(("kind", "workers"), [("headers", 1), ("table", 2), ("folder", 1)])
def test_prepared_splits_hold_the_records_tokens_and_labels_of_the_in_memory_path(
    sources: dict[str, Path], tmp_path: Path, kind: str, workers: int
) -> None:
    options = {**SETTINGS, **labels_of(kind, sources)}
    manifest = prepare_fasta(
        sources[kind], tmp_path / "out", **options, workers=workers, progress=False, part_records=64
    )
    in_memory = FastaDataModule(source=str(sources[kind]), loading="memory", **options)
    in_memory.ready()
    assert manifest.state == in_memory.inference_state()  # the k-mer tokenizer and the classes
    from_shards = streamed(tmp_path / "out", **labels_of(kind, sources))
    assert from_shards.facts() == in_memory.facts()
    for split in SPLITS:  # the same records in each split (in memory: the classes in turn; prepared: the file's order)
        tokens, labels = in_memory.splits[split]
        shards = from_shards.splits[split]
        pairs = [shards[(i, 0)] for i in range(len(shards))]
        assert samples([ids for ids, _ in pairs], [label for _, label in pairs]) == samples(tokens, labels.tolist())
        assert sorted(from_shards.lengths[split].tolist()) == sorted(in_memory.lengths[split].tolist())


def test_two_ranks_see_every_record_once_and_reverse_complements_are_drawn_per_record(prepared: Path) -> None:
    data = streamed(prepared)
    data.ready()
    sizes, lengths = chunk_sizes(prepared / "train"), data.lengths["train"]
    assert len(sizes) > 2  # a chunk per part of 64 records
    seen, counts = [], []
    for rank in (0, 1):
        order = BucketedOrder(sizes, 16, lengths, shuffle=True, equal_batches=True, seed=1, rank=rank, world_size=2)
        order.set_epoch(1)
        batches = order.batches()
        counts.append(len(batches))
        seen += torch.cat(batches).tolist()
    assert sorted(seen) == list(range(len(lengths))) and len(set(counts)) == 1
    plain, flipping = data.splits["train"], streamed(prepared, reverse_complement=0.5).ready().splits["train"]
    tokenizer = data.tokenizer
    flipped = 0
    for index in range(len(plain)):
        ids, label = plain[(index, 0)]
        other, other_label = flipping[(index, 0)]
        assert label == other_label and torch.equal(other, flipping[(index, 0)][0])  # the same draw again
        if not torch.equal(ids, other):
            assert tokenizer.decode(other.tolist()) == reverse_complement(tokenizer.decode(ids.tolist()))
            flipped += 1
    assert 0.3 < flipped / len(plain) < 0.7
    always = streamed(prepared, reverse_complement=1.0).ready().splits["val"]  # evaluation reads records as written
    assert all(torch.equal(always[(i, 0)][0], data.splits["val"][(i, 0)][0]) for i in range(len(always)))


def test_the_streamed_loader_pads_batches_and_resumes_mid_epoch(prepared: Path) -> None:
    loader = streamed(prepared, batch_size=16, workers=1, reverse_complement=0.5).train_dataloader()
    loader.sampler.set_epoch(2)
    batches = list(loader)
    assert batches[0][0].dtype == torch.long and batches[0][0].shape[1] <= 20
    assert sum(len(labels) for _, labels in batches) == read_manifest(prepared, "fasta").splits["train"]
    loader.progress = lambda: 3
    resumed = streamed(prepared, batch_size=16, reverse_complement=0.5).train_dataloader()
    resumed.load_state_dict(loader.state_dict())
    resumed.sampler.set_epoch(2)
    rest = list(resumed)
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(rest, batches[3:], strict=True))
    assert len(rest) == len(batches) - 3


def test_a_stopped_prepare_goes_on_and_writes_the_same_shards(
    sources: dict[str, Path], prepared: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    output, real_write, calls = tmp_path / "again", fasta_shards.write_part, []

    def failing(job: tuple) -> int:
        calls.append(job[2])
        if len(calls) == 3:
            raise RuntimeError("a worker failed")
        return real_write(job)

    with monkeypatch.context() as patched:
        patched.setattr(fasta_shards, "write_part", failing)
        with pytest.raises(RuntimeError, match="a worker failed"):
            prepare_fasta(sources["headers"], output, **SETTINGS, workers=1, progress=False, part_records=64)
    assert not (output / MANIFEST).exists()
    prepare_fasta(sources["headers"], output, **SETTINGS, workers=2, progress=False, part_records=64)
    assert calls == [0, 1, 2]  # the parts written before the stop were not written again
    names = sorted(str(path.relative_to(prepared)) for path in prepared.rglob("*") if path.is_file())
    assert names == sorted(str(path.relative_to(output)) for path in output.rglob("*") if path.is_file())
    assert all((prepared / name).read_bytes() == (output / name).read_bytes() for name in names if name != MANIFEST)


def test_a_damaged_shard_and_other_settings_are_refused_in_one_line(prepared: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(prepared, copy)
    chunk = sorted((copy / "val").glob("chunk-*.bin"))[0]
    data = bytearray(chunk.read_bytes())
    data[len(data) // 2] ^= 0xFF
    chunk.write_bytes(bytes(data))
    with pytest.raises(ConfigError) as raised:
        list(streamed(copy).val_dataloader())
    assert str(raised.value) == f"shard {chunk} is damaged (not as prepared); restore it, or prepare the dataset again"
    with pytest.raises(
        ConfigError, match=r"was prepared with alphabet dna, unknown error, k 3, stride 2, max_length 20"
    ):
        streamed(prepared, k=4).ready()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", "is empty; give a file with text"),
        ("ACGT\n>a|x\nACGT\n", "line 1 holds sequence before any '>' header: not FASTA"),
        (">a|x\nACGT\n>b\nACGT\n", "record b (line 3) has no label in its header"),
        (">a|x\nACGT\n>b|y\nAC-T\n", "record b (line 3) has '-' at position 3, not a DNA base"),
        (">a|x\nACGT\n>b|y\nACGT\n>a|y\nACGT\n", "record a (line 5) repeats the id of"),
        ("".join(f">s{i}|x\nACGT\n" for i in range(30)), "have 1 label(s); need 2 or more"),
    ],
)
def test_a_bad_file_is_refused_in_one_line_before_anything_is_written(
    tmp_path: Path, content: str, message: str
) -> None:
    source = tmp_path / "bad.fa"
    source.write_text(content)
    with pytest.raises(ConfigError, match=re.escape(message)) as raised:
        prepare_fasta(source, tmp_path / "out", workers=1, progress=False)
    assert "\n" not in str(raised.value) and not (tmp_path / "out").exists()


def test_a_file_too_big_for_memory_streams_from_shards_prepared_in_the_cache(
    sources: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FIRSTLIGHT_DATA", str(tmp_path / "cache"))
    monkeypatch.setattr("datamodules.sequence_streaming.available_memory", lambda: 100_000)
    data = FastaDataModule(source=str(sources["folder"]), **SETTINGS, workers=0)
    assert data.shards is not None and data.shards.parent == tmp_path / "cache" / "prepared"
    assert data.loading_note().startswith("data: streaming: in memory it would take about")
    in_memory = FastaDataModule(source=str(sources["folder"]), **SETTINGS, loading="memory")
    assert data.facts() == in_memory.facts() and in_memory.loading_note() == "data: in memory"
    assert sum(len(labels) for _, labels in data.test_dataloader()) == len(in_memory.splits["test"][1])


def test_the_prepare_command_prepares_fasta_with_the_datamodules_defaults(
    sources: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    output = tmp_path / "prepared"
    handler = signal.getsignal(signal.SIGTERM)
    try:  # the kind follows from the suffix
        assert prepare_command([str(sources["headers"]), str(output), "--workers", "1"]) == 0
    finally:
        signal.signal(signal.SIGTERM, handler)
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith(f"prepared {output} (fasta: train ")
    settings = read_manifest(output, "fasta").settings
    assert {name: settings[name] for name in ("alphabet", "unknown", "k", "stride", "max_length")} == {
        "alphabet": "dna",
        "unknown": "error",
        "k": 1,
        "stride": 1,
        "max_length": 1000,
    }
    assert FastaDataModule(source=str(output), workers=0).num_classes == 2


@pytest.mark.slow
def test_a_run_streams_prepared_records_and_its_checkpoint_predicts_without_them(
    sources: dict[str, Path], tmp_path: Path
) -> None:
    prepared = tmp_path / "prepared"
    prepare_fasta(sources["headers"], prepared, workers=1, progress=False)
    run = run_cli(
        *("--config", "cnn_oct4_mafk", "--data.source", str(prepared), "--data.workers", "1"),
        *("--trainer.max_steps", "3", "--model.net.channels", "[8, 8]"),
        cwd=tmp_path,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert f"data: streaming: a prepared folder; from {prepared}, 1 DataLoader worker(s) per process" in run.stderr
    (run_dir,) = (tmp_path / "runs" / "cnn_oct4_mafk").iterdir()
    hidden = prepared.with_name("elsewhere")
    prepared.rename(hidden)  # the checkpoint holds the tokenizer and classes: the shards are not needed
    try:
        result = run_module("experiments.predict", str(run_dir), "ACGTACGTTTGACA", "GGGCCCAATT", cwd=tmp_path)
    finally:
        hidden.rename(prepared)
    assert result.returncode == 0, result.stderr[-2000:]
    assert {line.split()[-2] for line in result.stdout.strip().splitlines()[-2:]} <= {"tf", "bg"}, result.stdout
