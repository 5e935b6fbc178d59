"""Prepared language-model corpora (datamodules/token_corpus.py): the same ids as the in-memory path, a
resumable prepare, windows drawn from (seed, epoch, batch) alone, and one-line errors for a damaged folder."""

from __future__ import annotations

import json
import os
import pickle
import re
import shutil
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pytest
import torch

import datamodules.language_model as language_model
import datamodules.token_corpus as token_corpus
from datamodules.batches import ShardedOrder
from datamodules.language_model import LanguageModelDataModule
from datamodules.prepared import MANIFEST
from datamodules.token_corpus import TokenCorpus, WindowBatches, prepare_corpus
from tests.helpers import run_cli
from validation import ConfigError

SPLITS = ("train", "val", "test")
CHUNK = 20_000  # bytes: the test text is cut into about 15 chunks, as a big one is into thousands


def sample_text(characters: int = 300_000, seed: int = 0) -> str:
    """Lines of made-up words with what a real text holds: a byte-order mark, non-ASCII letters, a dash,
    indented and upper-case lines, blank lines, and some Windows line ends ("\\r\\n")."""
    rng = np.random.default_rng(seed)
    syllables = ["ka", "lo", "mi", "the", "and", "or", "qu", "é", "ß", "st", "ing", "ed", "a", "e"]
    lines, count = ["\ufeff"], 0
    while count < characters:
        words = ["".join(rng.choice(syllables, rng.integers(1, 4))) for _ in range(rng.integers(0, 12))]
        line = " ".join(words)
        kind = len(lines) % 7
        if kind == 1:
            line = "  " + line.capitalize() + "."
        elif kind == 2:
            line = line.upper() + ","
        elif kind == 3:
            line += f" — {rng.integers(1000)}"
        line += ("\r\n" if len(lines) % 13 == 0 else "\n") + ("\n" if len(lines) % 17 == 0 else "")
        lines.append(line)
        count += len(line)
    return "".join(lines)


@pytest.fixture(scope="module")
def text_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("text") / "corpus.txt"
    path.write_bytes(sample_text().encode())
    return path


@pytest.fixture(scope="module")
def char_corpus(text_file: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("prepared") / "corpus"
    prepare_corpus(text_file, folder, workers=2, chunk_bytes=CHUNK, progress=False)
    return folder


def bins(folder: Path) -> dict[str, bytes]:
    return {split: (folder / f"{split}.bin").read_bytes() for split in SPLITS}


@pytest.mark.parametrize("kind", ["char", "bpe"])
def test_a_prepared_corpus_holds_the_ids_of_the_in_memory_path(
    kind: Literal["char", "bpe"], text_file: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "corpus"
    manifest = prepare_corpus(
        text_file, folder, tokenizer=kind, vocab_size=300, workers=2, chunk_bytes=CHUNK, progress=False
    )
    memory = LanguageModelDataModule(source=str(text_file), tokenizer=kind, vocab_size=300, context_length=16)
    memory.ready()
    assert manifest.settings["dtype"] == "uint16"
    for split in SPLITS:
        ids = np.fromfile(folder / f"{split}.bin", dtype=np.uint16)
        # Chunks are cut at line breaks that split no BPE pre-token: the same ids, not just the same text.
        assert np.array_equal(ids, memory.ids[split].numpy()) and manifest.splits[split] == len(ids)
    assert manifest.state["tokenizer"] == memory.tokenizer.to_json()  # type: ignore[union-attr]
    assert (manifest.state["characters"], manifest.state["tokens"]) == (memory.characters, memory.tokens)
    assert sorted(path.name for path in folder.iterdir()) == [
        MANIFEST,
        "test.bin",
        "tokenizer.json",
        "train.bin",
        "val.bin",
    ]


def test_an_interrupted_prepare_goes_on_where_it_stopped(
    text_file: Path, char_corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    encode = token_corpus.encode_part
    calls: list[str] = []
    stop_at = [5]  # the 5th part fails (as a kill would stop it), the first time

    def interrupted(job: tuple) -> int:
        calls.append(job[1].name)
        if len(calls) == stop_at[0]:
            raise InterruptedError
        return encode(job)

    monkeypatch.setattr(token_corpus, "encode_part", interrupted)
    folder = tmp_path / "corpus"
    with pytest.raises(InterruptedError):
        prepare_corpus(text_file, folder, workers=1, chunk_bytes=CHUNK, progress=False)
    assert not (folder / MANIFEST).exists() and len(list((folder / ".parts").glob("*.bin"))) == 4
    with pytest.raises(ConfigError, match="prepare did not finish"):
        LanguageModelDataModule(source=str(folder)).ready()
    calls.clear()
    stop_at[0] = 0
    prepare_corpus(text_file, folder, workers=1, chunk_bytes=CHUNK, progress=False)
    assert len(calls) > 5 and not set(calls) & {"train-000000.bin", "train-000003.bin"}  # done parts are kept
    assert bins(folder) == bins(char_corpus) and not (folder / ".parts").exists()


def test_batches_from_a_prepared_corpus_are_those_of_the_in_memory_path(text_file: Path, char_corpus: Path) -> None:
    prepared = LanguageModelDataModule(source=str(char_corpus), context_length=16, batch_size=8)
    memory = LanguageModelDataModule(source=str(text_file), context_length=16, batch_size=8)
    assert prepared.facts() == memory.facts()
    for split in SPLITS:
        ids = torch.from_numpy(np.fromfile(char_corpus / f"{split}.bin", dtype=np.uint16).astype(np.int64))
        loaders = [getattr(data, f"{split}_dataloader")() for data in (prepared, memory)]
        assert len(loaders[0]) == len(loaders[1])
        batches = list(loaders[0])
        assert [b[0].shape for b in batches] == [b[0].shape for b in loaders[1]]
        for inputs, targets in batches:
            assert inputs.dtype == torch.long and torch.equal(inputs[:, 1:], targets[:, :-1])
        windows = torch.cat([torch.cat([inputs, targets[:, -1:]], 1) for inputs, targets in batches])
        if split == "train":  # anywhere in the split
            every = {tuple(window): s for s, window in enumerate(ids.unfold(0, 17, 1).tolist())}
            assert all(tuple(window) in every for window in windows.tolist())
            continue
        # Evaluation: each consecutive window of the split once (every token a target once); validation's
        # in a scattered order, so that its first batches sample the whole split.
        expected = ids[torch.arange(len(windows))[:, None] * 16 + torch.arange(17)]
        position = {tuple(window): k for k, window in enumerate(expected.tolist())}
        order = [position[tuple(window)] for window in windows.tolist()]
        assert sorted(order) == list(range(len(expected)))
        assert (order == sorted(order)) == (split == "test")
        if split == "val":
            assert max(order[:8]) - min(order[:8]) > len(expected) / 2


def test_training_windows_depend_on_seed_epoch_and_batch_alone(char_corpus: Path) -> None:
    data = LanguageModelDataModule(source=str(char_corpus), context_length=16, batch_size=8)
    loader = data.train_dataloader()
    epochs = {}
    for epoch in (0, 1):
        loader.sampler.set_epoch(epoch)
        epochs[epoch] = [inputs for inputs, _ in loader]
    assert not torch.equal(epochs[0][0], epochs[1][0])
    # A run resumed after 5 batches of epoch 1 (Lightning restores the loader's state from the checkpoint)
    # goes on with the windows the uninterrupted run trains on.
    resumed = LanguageModelDataModule(source=str(char_corpus), context_length=16, batch_size=8).train_dataloader()
    resumed.load_state_dict({"epoch": 1, "batches_done": 5})
    resumed.sampler.set_epoch(1)
    rest = [inputs for inputs, _ in resumed]
    assert len(rest) == len(epochs[1]) - 5 and all(torch.equal(a, b) for a, b in zip(rest, epochs[1][5:], strict=True))
    # Two ranks draw different windows; their validation shares make up the split, once. A corpus sent to
    # another process (ddp_spawn pickles the datamodule) opens its files there.
    corpus = pickle.loads(pickle.dumps(TokenCorpus(char_corpus)))
    for split in ("train", "val"):
        count = corpus.count(split, 16)
        shares = [
            WindowBatches(corpus, split, 16, 8, ShardedOrder(count, shuffle=split == "train", rank=r, world_size=2))
            for r in (0, 1)
        ]
        starts = [torch.cat(share.batches()).tolist() for share in shares]
        assert not set(starts[0]) & set(starts[1]) or split == "train"
        if split == "val":
            assert sorted(starts[0] + starts[1]) == [16 * k for k in range(count)]
        else:
            assert starts[0][:8] != starts[1][:8]


@pytest.mark.parametrize("damage", ["truncated", "missing", "version", "source changed"])
def test_a_damaged_corpus_is_one_error(damage: str, char_corpus: Path, tmp_path: Path) -> None:
    source = tmp_path / "corpus.txt"
    shutil.copy(json.loads((char_corpus / MANIFEST).read_text())["source"], source)
    folder = tmp_path / "corpus"
    prepare_corpus(source, folder, workers=1, chunk_bytes=10**6, progress=False)
    LanguageModelDataModule(source=str(folder)).ready()
    manifest = json.loads((folder / MANIFEST).read_text())
    if damage == "truncated":
        os.truncate(folder / "val.bin", 1000)
    elif damage == "missing":
        (folder / "test.bin").unlink()
    elif damage == "version":
        (folder / MANIFEST).write_text(json.dumps(manifest | {"version": 99}))
    else:
        source.write_text("another text\n" * 1000)
    message = {
        "truncated": "truncated",
        "missing": "is missing",
        "version": "another version",
        "source changed": "changed",
    }
    with pytest.raises(ConfigError, match=message[damage]) as error:
        LanguageModelDataModule(source=str(folder)).ready()
    assert "\n" not in str(error.value)


def test_settings_other_than_the_prepared_ones_are_refused(char_corpus: Path) -> None:
    settings: list[dict[str, Any]] = [{"tokenizer": "bpe"}, {"val_fraction": 0.1}]
    for setting in settings:
        with pytest.raises(ConfigError, match=r"was prepared with tokenizer char, val_fraction 0\.05") as error:
            LanguageModelDataModule(source=str(char_corpus), **setting).ready()
        assert f"--data.{next(iter(setting))}" in str(error.value) and "\n" not in str(error.value)
    # vocab_size means nothing to a character tokenizer
    LanguageModelDataModule(source=str(char_corpus), vocab_size=123).ready()


def test_prepare_never_takes_a_folder_of_other_files_and_keeps_a_finished_corpus(
    text_file: Path, char_corpus: Path, tmp_path: Path
) -> None:
    users = tmp_path / "mine"
    users.mkdir()
    (users / "notes.txt").write_text("keep me")
    with pytest.raises(ConfigError, match=r"holds files that are not a prepared corpus \(notes\.txt"):
        prepare_corpus(text_file, users, progress=False)
    assert [path.name for path in users.iterdir()] == ["notes.txt"]
    folder = tmp_path / "corpus"
    shutil.copytree(char_corpus, folder)
    with pytest.raises(ConfigError, match="already holds a prepared corpus; give another folder, or --overwrite"):
        prepare_corpus(text_file, folder, progress=False)
    prepare_corpus(text_file, folder, tokenizer="bpe", vocab_size=300, workers=1, overwrite=True, progress=False)
    assert LanguageModelDataModule(source=str(folder), tokenizer="bpe", vocab_size=300).ready().vocab_size == 300


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"text\n" * 100 + b"\xff\xfe", "is not UTF-8 text (byte 500)"),
        (b"line\n" * 3 + b"a\0b\n", "line 4 holds a NUL character"),
        (b"\xef\xbb\xbf \n\n", "is empty"),
        ("text".encode("utf-16"), "is UTF-16 text"),
    ],
    ids=["not-utf8", "nul", "blank", "utf16"],
)
def test_a_bad_text_is_the_error_of_the_in_memory_path(content: bytes, message: str, tmp_path: Path) -> None:
    source = tmp_path / "bad.txt"
    source.write_bytes(content)
    with pytest.raises(ConfigError, match=re.escape(message)):
        prepare_corpus(source, tmp_path / "corpus", workers=1, chunk_bytes=64, progress=False)
    with pytest.raises(ConfigError, match=re.escape(message)):
        LanguageModelDataModule(source=str(source)).ready()


def test_a_text_too_big_for_memory_is_refused_with_the_prepare_command(
    text_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(language_model, "available_memory", lambda: 10**6)
    with pytest.raises(ConfigError) as error:
        LanguageModelDataModule(source=str(text_file), tokenizer="bpe", vocab_size=500).ready()
    command = f"python -m experiments.prepare {text_file} {text_file.parent / 'corpus_corpus'} --kind corpus"
    command += " --tokenizer bpe --vocab_size 500 --val_fraction 0.05 --test_fraction 0.05"
    assert f"`{command}`" in str(error.value) and "\n" not in str(error.value)
    assert "--data.source" in str(error.value)


@pytest.mark.slow  # about 18 s: a fresh process, an LSTM's 3 steps and a validation
def test_training_from_a_prepared_corpus_runs_end_to_end(char_corpus: Path, tmp_path: Path) -> None:
    result = run_cli(
        "--config=lstm_shakespeare",
        f"--data.source={char_corpus}",
        "--trainer.max_steps=3",
        "--trainer.val_check_interval=3",
        "--trainer.limit_val_batches=2",
        "--run.test=false",
        "--run.logger=csv",
        f"--run.root={tmp_path / 'runs'}",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (run_dir,) = (tmp_path / "runs" / "lstm_shakespeare").iterdir()
    summary = json.loads((run_dir / "summary.json").read_text())
    assert "val/loss" in json.dumps(summary)
