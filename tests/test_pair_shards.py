"""Translation pairs streamed from prepared shards: prepare (the in-memory path's split by row, tokenizer and ids;
resumable; bad input in one line), every pair once across ranks, the datamodule's choice of path, and a run."""

from __future__ import annotations

import random
import re
import shutil
import signal
from pathlib import Path
from typing import Any

import pytest
import torch

import datamodules.pair_shards as pair_shards
from datamodules.image_shards import chunk_sizes
from datamodules.pair_shards import prepare_pairs
from datamodules.prepared import MANIFEST, read_manifest
from datamodules.seq2seq import Seq2SeqDataModule
from datamodules.special_tokens import BOS_ID, EOS_ID
from datamodules.text_shards import BucketedOrder
from experiments.prepare import main as prepare_command
from tests.helpers import run_cli, run_module
from validation import ConfigError

SPLITS = ("train", "val", "test")
WORDS = {"Haus": "house", "Baum": "tree", "Hund": "dog", "Katze": "cat", "rot": "red", "gross": "big"}


@pytest.fixture(scope="module")
def tsv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """300 pairs of one to eight words (some longer than 30 characters), CRLF line ends and a blank line."""
    rng = random.Random(0)
    rows = []
    for _ in range(300):
        words = rng.choices(list(WORDS), k=rng.randint(1, 8))
        rows.append(f"{' '.join(words)}\t{' '.join(WORDS[word] for word in words)}")
    rows.insert(40, "")
    path = tmp_path_factory.mktemp("pairs") / "pairs.tsv"
    path.write_bytes(("source\ttarget\r\n" + "\r\n".join(rows) + "\r\n").encode())
    return path


SETTINGS: dict[str, Any] = {"tokenizer": "word", "vocab_size": 50}


@pytest.fixture(scope="module")
def prepared(tsv: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    output = tmp_path_factory.mktemp("prepared") / "pairs"
    prepare_pairs(tsv, output, **SETTINGS, workers=1, progress=False, part_rows=64)
    return output


def streamed(folder: Path, **options: Any) -> Seq2SeqDataModule:
    return Seq2SeqDataModule(source=str(folder), **{**SETTINGS, "workers": 0, **options})


@pytest.mark.parametrize(("tokenizer", "max_chars", "workers"), [("word", None, 1), ("bpe", 30, 2), ("char", None, 1)])
def test_prepared_splits_hold_the_pairs_and_ids_of_the_in_memory_path(
    tsv: Path, tmp_path: Path, tokenizer: str, max_chars: int | None, workers: int
) -> None:
    options: dict[str, Any] = {"tokenizer": tokenizer, "vocab_size": 300, "max_chars": max_chars}
    manifest = prepare_pairs(tsv, tmp_path / "out", **options, workers=workers, progress=False, part_rows=64)
    in_memory = Seq2SeqDataModule(source=str(tsv), loading="memory", **options)
    in_memory.ready()
    assert manifest.state == in_memory.inference_state()  # the same tokenizer, trained from a stream
    from_shards = streamed(tmp_path / "out", **options)
    assert from_shards.facts() == in_memory.facts()
    assert manifest.splits == {split: len(in_memory.splits[split][0]) for split in SPLITS}
    rows = [line.split("\t") for line in tsv.read_text().splitlines()[1:] if line]
    kept = sum(max(map(len, row)) <= (max_chars or 99) for row in rows)  # pairs longer than max_chars left out
    assert sum(manifest.splits.values()) == kept and (kept < 300) == (max_chars is not None)
    for split in SPLITS:
        sources, targets = in_memory.splits[split]
        shards = from_shards.splits[split]
        pairs = [shards[(i, 0)] for i in range(len(shards))]  # in the file's order, as in memory
        assert all(torch.equal(s, sources[i]) and torch.equal(t, targets[i]) for i, (s, t) in enumerate(pairs))
        assert from_shards.lengths[split].tolist() == in_memory.lengths[split].tolist()
    assert from_shards.texts("test") == in_memory.texts("test")


def test_the_built_in_sources_keep_their_shuffled_split() -> None:
    data = Seq2SeqDataModule(source="reverse", num_examples=200, max_length=6)
    data.ready()
    assert {split: len(data.splits[split][0]) for split in SPLITS} == {"train": 160, "val": 20, "test": 20}
    assert data.loading_note() == "data: in memory (built-in)"
    with pytest.raises(ConfigError, match=r"reverse is held in memory; --data\.loading streaming takes a file"):
        Seq2SeqDataModule(source="reverse", loading="streaming").ready()


def test_two_ranks_see_every_pair_once_in_equal_batch_counts(prepared: Path) -> None:
    data = streamed(prepared)
    data.ready()
    sizes, lengths = chunk_sizes(prepared / "train"), data.lengths["train"]
    assert len(sizes) > 2  # a chunk per part of 64 rows
    seen, counts = [], []
    for rank in (0, 1):
        order = BucketedOrder(sizes, 16, lengths, shuffle=True, equal_batches=True, seed=1, rank=rank, world_size=2)
        order.set_epoch(1)
        batches = order.batches()
        counts.append(len(batches))
        seen += torch.cat(batches).tolist()
    assert sorted(seen) == list(range(len(lengths))) and len(set(counts)) == 1


def test_the_streamed_loader_pads_pairs_as_in_memory_and_resumes_mid_epoch(prepared: Path) -> None:
    loader = streamed(prepared, batch_size=16, workers=1).train_dataloader()
    loader.sampler.set_epoch(2)
    batches = list(loader)
    sources, targets = batches[0]
    assert sources.dtype == torch.long and (targets[:, 0] == BOS_ID).all() and ((targets == EOS_ID).sum(1) == 1).all()
    assert sum(len(batch[0]) for batch in batches) == read_manifest(prepared, "pairs").splits["train"]
    loader.progress = lambda: 3
    resumed = streamed(prepared, batch_size=16).train_dataloader()
    resumed.load_state_dict(loader.state_dict())
    resumed.sampler.set_epoch(2)
    rest = list(resumed)
    assert len(rest) == len(batches) - 3
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(rest, batches[3:], strict=True))


def test_a_stopped_prepare_goes_on_and_writes_the_same_shards(
    tsv: Path, prepared: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    output, real_write, calls = tmp_path / "again", pair_shards.write_part, []

    def failing(job: tuple) -> int:
        calls.append(job[2])
        if len(calls) == 3:
            raise RuntimeError("a worker failed")
        return real_write(job)

    with monkeypatch.context() as patched:
        patched.setattr(pair_shards, "write_part", failing)
        with pytest.raises(RuntimeError, match="a worker failed"):
            prepare_pairs(tsv, output, **SETTINGS, workers=1, progress=False, part_rows=64)
    assert not (output / MANIFEST).exists()
    prepare_pairs(tsv, output, **SETTINGS, workers=2, progress=False, part_rows=64)
    assert calls == [0, 1, 2]  # the parts written before the stop were not written again
    names = sorted(str(path.relative_to(prepared)) for path in prepared.rglob("*") if path.is_file())
    assert names == sorted(str(path.relative_to(output)) for path in output.rglob("*") if path.is_file())
    assert all((prepared / name).read_bytes() == (output / name).read_bytes() for name in names if name != MANIFEST)


def test_a_damaged_shard_and_other_settings_are_refused_in_one_line(prepared: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(prepared, copy)
    chunk = sorted((copy / "test").glob("chunk-*.bin"))[0]
    data = bytearray(chunk.read_bytes())
    data[len(data) // 2] ^= 0xFF
    chunk.write_bytes(bytes(data))
    with pytest.raises(ConfigError) as raised:
        list(streamed(copy).test_dataloader())
    assert str(raised.value) == f"shard {chunk} is damaged (not as prepared); restore it, or prepare the dataset again"
    with pytest.raises(ConfigError, match=r"was prepared with tokenizer word, vocab_size 50, max_chars None, not "):
        streamed(prepared, max_chars=20).ready()
    with pytest.raises(ConfigError, match=r"is a prepared dataset, which streams; leave out --data\.loading"):
        streamed(prepared, loading="memory").ready()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("source\tlabel\nein\tone\n", "has no column target (found: source, label); name the right columns"),
        ("", "is empty; give a file with text"),
        ("source\ttarget\nein\tone\nzwei\t\n", "line 3 has no value in column target"),
        ("source\ttarget\n" + "ein\tone\n" * 3, "has too few pairs (3) for train, val and test splits"),
    ],
)
def test_a_bad_file_is_refused_in_one_line_before_anything_is_written(
    tmp_path: Path, content: str, message: str
) -> None:
    source = tmp_path / "bad.tsv"
    source.write_text(content)
    with pytest.raises(ConfigError, match=re.escape(message)) as raised:
        prepare_pairs(source, tmp_path / "out", workers=1, progress=False)
    assert "\n" not in str(raised.value) and not (tmp_path / "out").exists()


def test_a_file_too_big_for_memory_streams_from_shards_prepared_in_the_cache(
    tsv: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FIRSTLIGHT_DATA", str(tmp_path / "cache"))
    monkeypatch.setattr("datamodules.sequence_streaming.available_memory", lambda: 100_000)
    data = Seq2SeqDataModule(source=str(tsv), **SETTINGS, workers=0)
    assert data.shards is not None and data.shards.parent == tmp_path / "cache" / "prepared"
    assert data.loading_note().startswith("data: streaming: in memory it would take about")
    in_memory = Seq2SeqDataModule(source=str(tsv), **SETTINGS, loading="memory")
    assert data.facts() == in_memory.facts() and in_memory.loading_note() == "data: in memory"
    assert sum(len(batch[0]) for batch in data.val_dataloader()) == len(in_memory.splits["val"][0])


def test_the_prepare_command_prepares_pairs_with_the_datamodules_defaults(
    tsv: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    output = tmp_path / "prepared"
    handler = signal.getsignal(signal.SIGTERM)
    try:
        assert prepare_command([str(tsv), str(output), "--kind", "pairs", "--workers", "1"]) == 0
    finally:
        signal.signal(signal.SIGTERM, handler)
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith(f"prepared {output} (pairs: train ")
    manifest = read_manifest(output, "pairs")
    assert manifest.settings == {
        "tokenizer": "char",
        "vocab_size": 8000,
        "max_chars": None,
        "val_fraction": 0.1,
        "test_fraction": 0.1,
        "seed": 0,
    }
    assert Seq2SeqDataModule(source=str(output), workers=0).ready().splits["train"] is not None


@pytest.mark.slow
def test_a_run_streams_prepared_pairs_and_its_checkpoint_predicts_without_them(prepared: Path, tmp_path: Path) -> None:
    run = run_cli(
        *("--config", "gru_reverse", "--data.source", str(prepared), "--data.workers", "1"),
        *("--data.tokenizer", "word", "--data.vocab_size", "50", "--trainer.max_steps", "3"),
        *("--model.net.embed_dim", "8", "--model.net.hidden_dim", "8"),
        cwd=tmp_path,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert f"data: streaming: a prepared folder; from {prepared}, 1 DataLoader worker(s) per process" in run.stderr
    (run_dir,) = (tmp_path / "runs" / "gru_reverse").iterdir()
    hidden = prepared.with_name("elsewhere")
    prepared.rename(hidden)  # the checkpoint holds the tokenizer: the shards are not needed
    try:
        result = run_module("experiments.predict", str(run_dir), "Haus rot", "Hund", cwd=tmp_path)
    finally:
        hidden.rename(prepared)
    assert result.returncode == 0, result.stderr[-2000:]
    assert len(result.stdout.strip().splitlines()) >= 2
