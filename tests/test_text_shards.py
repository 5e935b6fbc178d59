"""Texts streamed from prepared shards: prepare (the in-memory path's split, tokenizer and tokens; resumable;
bad input in one line), the bucketed epoch order across ranks, the datamodule's choice of path, and a run."""

from __future__ import annotations

import json
import random
import re
import shutil
import signal
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import datamodules.text_shards as text_shards
from datamodules.image_shards import chunk_sizes
from datamodules.prepared import MANIFEST, read_manifest
from datamodules.special_tokens import PAD_ID
from datamodules.streaming import ChunkedOrder
from datamodules.text import TextClassificationDataModule
from datamodules.text_shards import BucketedOrder, prepare_texts
from experiments.prepare import main as prepare_command
from tests.helpers import run_cli, run_module
from validation import ConfigError

WORDS = ["good", "bad", "fine", "great", "awful", "movie", "plot", "actor", "scene", "long", "short", "fun"]
WORDS += ["dull,", "and", "the", "a", "it", "was"]
SETTINGS: dict[str, Any] = {"vocab_size": 200, "max_length": 24}  # texts run to 40 words: some are cut


def reviews(count: int = 400) -> list[dict[str, str]]:
    rng = random.Random(0)
    return [
        {
            "review": " ".join(rng.choices(WORDS, k=rng.randint(1, 40))),
            "stars": rng.choice(["pos", "neg", "meh"]),
            "author": f"a{rng.randrange(40)}",
        }
        for _ in range(count)
    ]


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The same 400 reviews as a CSV (byte-order mark, CRLF line ends, quoted commas, a cell over two lines,
    blank lines) and as JSON Lines (blank lines)."""
    folder = tmp_path_factory.mktemp("texts")
    rows = reviews()
    rows[7]["review"] = "first line\nsecond line, with a comma"
    lines = ["review,stars,author"] + [f'"{r["review"]}", {r["stars"]} ,{r["author"]}' for r in rows]
    lines.insert(50, "")
    csv_file = folder / "reviews.csv"
    csv_file.write_bytes(("\ufeff" + "\r\n".join(lines) + "\r\n").encode())
    jsonl_file = folder / "reviews.jsonl"
    jsonl_file.write_text("".join(json.dumps(r) + ("\n\n" if i == 9 else "\n") for i, r in enumerate(rows)))
    return {"csv": csv_file, "jsonl": jsonl_file}


COLUMNS: dict[str, Any] = {"text_column": "review", "label_column": "stars"}


@pytest.fixture(scope="module")
def prepared(files: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    output = tmp_path_factory.mktemp("prepared") / "reviews"
    prepare_texts(files["csv"], output, **COLUMNS, **SETTINGS, workers=1, progress=False, part_rows=64)
    return output


def streamed(folder: Path, **options: Any) -> TextClassificationDataModule:
    options = {**COLUMNS, **SETTINGS, "workers": 0, **options}
    return TextClassificationDataModule(source=str(folder), **options)


@pytest.mark.parametrize(
    ("kind", "group_column", "tokenizer", "workers"),
    [("csv", None, "word", 1), ("jsonl", None, "bpe", 2), ("csv", "author", "char", 1)],
)
def test_prepared_splits_hold_the_texts_tokens_and_labels_of_the_in_memory_path(
    files: dict[str, Path], tmp_path: Path, kind: str, group_column: str | None, tokenizer: str, workers: int
) -> None:
    options: dict[str, Any] = {**COLUMNS, **SETTINGS, "group_column": group_column, "tokenizer": tokenizer}
    manifest = prepare_texts(files[kind], tmp_path / "out", **options, workers=workers, progress=False, part_rows=64)
    in_memory = TextClassificationDataModule(source=str(files[kind]), loading="memory", **options)
    in_memory.ready()
    assert manifest.state == in_memory.inference_state()  # the same tokenizer, trained from a stream, and classes
    from_shards = streamed(tmp_path / "out", group_column=group_column, tokenizer=tokenizer)
    assert from_shards.facts() == in_memory.facts()
    assert manifest.splits == {split: len(in_memory.splits[split][1]) for split in ("train", "val", "test")}
    for split in ("train", "val", "test"):
        tokens, labels = in_memory.splits[split]
        shards = from_shards.splits[split]
        pairs = [shards[(i, 0)] for i in range(len(shards))]  # in the file's order, as in memory
        assert all(torch.equal(ids, tokens[i]) for i, (ids, _) in enumerate(pairs)), split
        assert [label for _, label in pairs] == labels.tolist()
        assert from_shards.lengths[split].tolist() == in_memory.lengths[split].tolist()


@pytest.mark.parametrize("bucket", [True, False])
def test_two_ranks_see_every_training_sample_once_in_equal_batch_counts(prepared: Path, bucket: bool) -> None:
    data = streamed(prepared)
    data.ready()
    lengths = data.lengths["train"]
    sizes = chunk_sizes(prepared / "train")
    assert len(sizes) > 3  # a chunk per part of 64 rows
    for epoch in (0, 1):
        seen, counts = [], []
        for rank in (0, 1):
            options: dict[str, Any] = {"shuffle": True, "equal_batches": True, "seed": 3, "window": 50}
            options |= {"rank": rank, "world_size": 2}
            order = BucketedOrder(sizes, 16, lengths, **options) if bucket else ChunkedOrder(sizes, 16, **options)
            order.set_epoch(epoch)
            batches = order.batches()
            assert len(batches) == len(order) and sorted(map(len, batches))[:-1] == [16] * (len(batches) - 1)
            counts.append(len(batches))
            seen += torch.cat(batches).tolist()
        assert sorted(seen) == list(range(len(lengths)))  # every sample once, none dropped, none repeated
        assert len(set(counts)) == 1  # DDP needs every rank to take the same number of steps


def test_bucketing_cuts_padding_and_keeps_every_sample(prepared: Path) -> None:
    shares = {}
    for bucket in (True, False):
        loader = streamed(prepared, bucket=bucket, batch_size=16).train_dataloader()
        padding = total = 0
        labels = []
        for tokens, batch_labels in loader:
            padding += int((tokens == PAD_ID).sum())
            total += tokens.numel()
            labels += batch_labels.tolist()
        assert len(labels) == read_manifest(prepared, "texts").splits["train"]
        shares[bucket] = padding / total
    assert shares[True] < 0.1 < 0.2 < shares[False]


def test_the_streamed_loader_with_a_worker_gives_padded_batches_and_resumes_mid_epoch(prepared: Path) -> None:
    loader = streamed(prepared, batch_size=32, workers=1).train_dataloader()
    loader.sampler.set_epoch(2)
    batches = list(loader)
    tokens, labels = batches[0]
    assert tokens.dtype == torch.long and (tokens[:, 0] == 2).all() and tokens.shape[1] <= 24 and len(labels) == 32
    loader.progress = lambda: 3
    resumed = streamed(prepared, batch_size=32).train_dataloader()
    resumed.load_state_dict(loader.state_dict())
    resumed.sampler.set_epoch(2)
    rest = list(resumed)
    assert len(rest) == len(batches) - 3
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(rest, batches[3:], strict=True))


def test_a_stopped_prepare_goes_on_and_writes_the_same_shards(
    files: dict[str, Path], prepared: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    output = tmp_path / "again"
    real_write = text_shards.write_part
    calls = []

    def failing(job: tuple) -> int:
        calls.append(job[2])
        if len(calls) == 3:
            raise RuntimeError("a worker failed")  # the whole prepare stops
        return real_write(job)

    with monkeypatch.context() as patched:
        patched.setattr(text_shards, "write_part", failing)
        with pytest.raises(RuntimeError, match="a worker failed"):
            prepare_texts(files["csv"], output, **COLUMNS, **SETTINGS, workers=1, progress=False, part_rows=64)
    assert not (output / MANIFEST).exists()
    with pytest.raises(ConfigError, match="its prepare did not finish"):
        read_manifest(output, "texts")
    done = sorted(path.name for path in (output / "train" / "parts").iterdir())
    assert done == ["000000", "000001"]
    prepare_texts(files["csv"], output, **COLUMNS, **SETTINGS, workers=2, progress=False, part_rows=64)
    assert calls == [0, 1, 2]  # the parts written before the stop were not written again
    names = sorted(str(path.relative_to(prepared)) for path in prepared.rglob("*") if path.is_file())
    assert names == sorted(str(path.relative_to(output)) for path in output.rglob("*") if path.is_file())
    for name in names:
        if name != MANIFEST:
            assert (prepared / name).read_bytes() == (output / name).read_bytes(), name
    assert (prepared / "train" / "lengths.npy").is_file() and len(list((prepared / "train").glob("chunk-*.bin"))) > 1


def test_a_shard_damaged_in_place_stops_reading_with_one_line(prepared: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(prepared, copy)
    chunk = sorted((copy / "val").glob("chunk-*.bin"))[0]
    data = bytearray(chunk.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte: the same size, so only its digest tells
    chunk.write_bytes(bytes(data))
    with pytest.raises(ConfigError) as raised:
        list(streamed(copy).val_dataloader())
    assert str(raised.value) == f"shard {chunk} is damaged (not as prepared); restore it, or prepare the dataset again"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("review,rating\nfine,5\n", "has no column stars (found: review, rating); name the right columns"),
        ("", "is empty; give a file with text"),
        ("review,stars\n", "has no rows"),
        ("review,stars\ngood,pos\nbad,\n", "line 3 has no value in column stars"),
        ("review,stars\n" + "x,pos\n" * 20, "bad.csv have 1 label(s); need 2 or more"),
    ],
)
def test_a_bad_file_is_refused_in_one_line_before_anything_is_written(
    tmp_path: Path, content: str, message: str
) -> None:
    source = tmp_path / "bad.csv"
    source.write_text(content)
    with pytest.raises(ConfigError, match=re.escape(message)) as raised:
        prepare_texts(source, tmp_path / "out", **COLUMNS, workers=1, progress=False)
    assert "\n" not in str(raised.value) and not (tmp_path / "out").exists()


def test_an_output_folder_of_other_files_and_other_settings_are_refused(
    files: dict[str, Path], prepared: Path, tmp_path: Path
) -> None:
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep")
    with pytest.raises(ConfigError, match="exists and is not a prepared dataset"):
        prepare_texts(files["csv"], mine, **COLUMNS, workers=1, progress=False)
    assert (mine / "notes.txt").read_text() == "keep"
    with pytest.raises(ConfigError, match="is already a prepared dataset; give --overwrite"):
        prepare_texts(files["csv"], prepared, **COLUMNS, **SETTINGS, workers=1, progress=False, part_rows=64)
    with pytest.raises(ConfigError, match=r"was prepared with tokenizer word, vocab_size 200, max_length 24, not "):
        streamed(prepared, max_length=64).ready()
    with pytest.raises(ConfigError, match=r"leave out --data\.pretrained_tokenizer"):
        streamed(prepared, pretrained_tokenizer="bert").ready()
    with pytest.raises(ConfigError, match=r"is a prepared dataset, which streams; leave out --data\.loading"):
        streamed(prepared, loading="memory").ready()


def test_a_file_too_big_for_memory_streams_from_shards_prepared_in_the_cache(
    files: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FIRSTLIGHT_DATA", str(tmp_path / "cache"))
    monkeypatch.setattr(
        "datamodules.sequence_streaming.available_memory", lambda: 100_000
    )  # a machine with 100 KB to spare
    data = TextClassificationDataModule(source=str(files["jsonl"]), **COLUMNS, **SETTINGS, workers=0)
    in_memory = TextClassificationDataModule(source=str(files["jsonl"]), **COLUMNS, **SETTINGS, loading="memory")
    assert data.facts() == in_memory.facts()
    assert data.shards is not None and data.shards.parent == tmp_path / "cache" / "prepared"
    assert data.prepared_dataset() == data.shards
    note = data.loading_note()
    assert note.startswith("data: streaming: in memory it would take about") and "GB available" in note
    assert in_memory.loading_note() == "data: in memory"
    assert sum(len(labels) for _, labels in data.test_dataloader()) == len(in_memory.splits["test"][1])


def test_the_prepare_command_prepares_a_table_with_the_datamodules_defaults(
    files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    output = tmp_path / "prepared"
    arguments = [str(files["jsonl"]), str(output), "--workers", "1", "--text_column", "review"]
    arguments += ["--label_column", "stars"]  # the kind follows from the file's name
    handler = signal.getsignal(signal.SIGTERM)  # the command sets its own (in a process of its own, as a user runs it)
    try:
        assert prepare_command(arguments) == 0
        assert capsys.readouterr().err.strip().splitlines()[-1].startswith(f"prepared {output} (texts: train ")
        settings = read_manifest(output, "texts").settings
        assert (settings["tokenizer"], settings["vocab_size"], settings["max_length"]) == ("word", 20000, 128)
        assert prepare_command(arguments) == 2
        assert capsys.readouterr().err.strip().splitlines() == [
            f"error: {output} is already a prepared dataset; give --overwrite to prepare it again"
        ]
    finally:
        signal.signal(signal.SIGTERM, handler)


@pytest.mark.slow
def test_a_run_streams_a_prepared_folder_and_its_checkpoint_predicts_without_it(prepared: Path, tmp_path: Path) -> None:
    run = run_cli(
        *("--config", "lstm_sentiment", "--data.source", str(prepared), "--data.workers", "1"),
        *("--data.vocab_size", "200", "--data.max_length", "24", "--trainer.max_steps", "3"),
        *("--model.net.embed_dim", "16", "--model.net.hidden_dim", "16"),
        cwd=tmp_path,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert f"data: streaming: a prepared folder; from {prepared}, 1 DataLoader worker(s) per process" in run.stderr
    (run_dir,) = (tmp_path / "runs" / "lstm_sentiment").iterdir()
    summary = json.loads((run_dir / "summary.json").read_text())
    assert np.isfinite(summary["test/acc"]) and np.isfinite(summary["test/loss"])
    hidden = prepared.with_name("elsewhere")
    prepared.rename(hidden)  # the checkpoint holds the tokenizer and classes: the shards are not needed
    try:
        result = run_module("experiments.predict", str(run_dir), "a good movie", "a dull plot", cwd=tmp_path)
    finally:
        hidden.rename(prepared)
    assert result.returncode == 0, result.stderr[-2000:]
    answers = [line.split()[-2] for line in result.stdout.strip().splitlines()[-2:]]
    assert set(answers) <= {"pos", "neg", "meh"}, result.stdout
