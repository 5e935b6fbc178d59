"""Sequence data: tokenizers fitted on training data only, disjoint splits, padding and bucketing."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from datamodules.language_model import LanguageModelDataModule
from datamodules.seq2seq import Seq2SeqDataModule, generate_pairs
from datamodules.special_tokens import BOS_ID, EOS_ID, PAD_ID, UNK_ID
from datamodules.text import TextClassificationDataModule
from datamodules.timeseries import TimeSeriesDataModule
from datamodules.tokenization import load_tokenizer, train_tokenizer
from validation import ConfigError


@pytest.mark.parametrize("kind", ["char", "bpe"])
def test_lossless_tokenizers_round_trip_and_reload(kind: str, tmp_path: Path) -> None:
    text = "To be, or not to be: that is the question.\nWhether 'tis nobler\tin the mind"
    tokenizer = train_tokenizer(kind, [text], vocab_size=300)  # type: ignore[arg-type]
    assert tokenizer.decode(tokenizer.encode(text)) == text
    tokenizer.save(tmp_path / "tokenizer.json")
    reloaded = load_tokenizer(tmp_path / "tokenizer.json")
    assert reloaded.encode(text) == tokenizer.encode(text) and reloaded.vocab_size == tokenizer.vocab_size


def test_char_tokenizer_maps_unseen_characters_to_unk() -> None:
    tokenizer = train_tokenizer("char", ["abc"])
    assert tokenizer.vocab_size == 4 + 3
    assert tokenizer.encode("abz") == [4, 5, UNK_ID]


def test_word_tokenizer_lowercases_and_splits_punctuation() -> None:
    tokenizer = train_tokenizer("word", ["Great movie, great fun!", "great movie"], vocab_size=100)
    ids = tokenizer.encode("GREAT movie, unseen!")
    assert ids[0] == ids[0] and ids[0] not in (UNK_ID, PAD_ID)
    assert ids[-2] == UNK_ID  # "unseen" never occurred in training
    assert len(ids) == 5  # great | movie | , | unseen | !


def test_rotten_tomatoes_splits_by_movie_with_training_vocabulary() -> None:
    datamodule = TextClassificationDataModule(tokenizer="word", val_fraction=0.1, test_fraction=0.1)
    datamodule.ready()
    sizes = {name: len(labels) for name, (_, labels) in datamodule.splits.items()}
    assert sum(sizes.values()) == 12808 and sizes["test"] > 1000 and sizes["val"] > 1000
    assert datamodule.classes == ["fresh", "rotten"] and datamodule.num_classes == 2
    # Movies never cross splits.
    from datamodules.splits import group_split
    from datamodules.text_sources import rotten_tomatoes

    rows = rotten_tomatoes()
    assignment = group_split([r["movie"] for r in rows], 0.1, 0.1, 0)
    movies = {name: {r["movie"] for r, a in zip(rows, assignment, strict=True) if a == name} for name in sizes}
    assert movies["train"].isdisjoint(movies["val"]) and movies["train"].isdisjoint(movies["test"])
    assert movies["val"].isdisjoint(movies["test"])
    # The vocabulary comes from the training texts only.
    hf = datamodule.tokenizer.tokenizer  # type: ignore[union-attr]

    def words(texts: list[str]) -> set[str]:
        return {w for t in texts for w, _ in hf.pre_tokenizer.pre_tokenize_str(hf.normalizer.normalize_str(t))}

    train_words = words([r["text"] for r, a in zip(rows, assignment, strict=True) if a == "train"])
    held_out_words = words([r["text"] for r, a in zip(rows, assignment, strict=True) if a != "train"])
    vocabulary = set(hf.get_vocab()) - {"<pad>", "<unk>", "<bos>", "<eos>"}
    assert vocabulary <= train_words
    assert held_out_words - train_words  # some held-out words are new, and so must be <unk>
    tokens, labels = next(iter(datamodule.test_dataloader()))
    assert (tokens[:, 0] == BOS_ID).all() and tokens.dtype == torch.long and len(tokens) == len(labels)


def test_bucketing_cuts_padding_and_keeps_every_example() -> None:
    datamodule = TextClassificationDataModule(batch_size=32)
    shares = {}
    for bucket in (True, False):
        datamodule.bucket = bucket
        loader = datamodule.train_dataloader()
        seen, padding, total = [], 0, 0
        for tokens, _ in loader:
            padding += int((tokens == PAD_ID).sum())
            total += tokens.numel()
        for batch in loader.batches():
            seen += batch.tolist()
        assert len(seen) == len(set(seen)) == len(loader) * 32  # each example once (last partial batch dropped)
        shares[bucket] = padding / total
    assert shares[True] < 0.1 < 0.4 < shares[False]


def write(path: Path, text: str, encoding: str = "utf-8") -> str:
    path.write_text(text, encoding=encoding)
    return str(path)


def test_users_csv_and_jsonl(tmp_path: Path) -> None:
    rows = [(f"text number {i} is {'good' if i % 2 else 'bad'}", "pos" if i % 2 else "neg") for i in range(60)]
    csv_path = write(tmp_path / "data.csv", "review,sentiment\n" + "".join(f'"{t}",{label}\n' for t, label in rows))
    jsonl = write(tmp_path / "data.jsonl", "".join(json.dumps({"review": t, "sentiment": s}) + "\n" for t, s in rows))
    for source in (csv_path, jsonl):
        datamodule = TextClassificationDataModule(source=source, text_column="review", label_column="sentiment")
        assert datamodule.num_classes == 2 and datamodule.classes == ["neg", "pos"]
        assert sum(len(labels) for _, labels in datamodule.splits.values()) == 60


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("review,stars\nfine,5\n", "has no column sentiment"),
        ("", "is empty"),
        ("review,sentiment\n", "has no rows"),
    ],
)
def test_bad_text_tables(tmp_path: Path, content: str, message: str) -> None:
    source = write(tmp_path / "data.csv", content)
    with pytest.raises(ConfigError, match=message):
        TextClassificationDataModule(source=source, text_column="review", label_column="sentiment").ready()


def test_non_utf8_text_is_a_clear_error(tmp_path: Path) -> None:
    source = tmp_path / "latin1.txt"
    source.write_bytes("café ".encode("latin-1") * 100)
    with pytest.raises(ConfigError, match="not UTF-8 text"):
        LanguageModelDataModule(source=str(source)).ready()


def test_language_model_split_is_contiguous_and_tokenizer_sees_training_text_only(tmp_path: Path) -> None:
    source = write(tmp_path / "text.txt", "a" * 800 + "b" * 100 + "c" * 100)
    datamodule = LanguageModelDataModule(source=source, context_length=10, val_fraction=0.1, test_fraction=0.1)
    datamodule.ready()
    a = datamodule.tokenizer.encode("a")[0]  # type: ignore[union-attr]
    assert datamodule.vocab_size == 5  # <pad> <unk> <bos> <eos> a: "b" and "c" were never seen in training
    assert (datamodule.splits["train"] == a).all()
    assert (datamodule.splits["val"] == UNK_ID).all() and (datamodule.splits["test"] == UNK_ID).all()
    inputs, targets = next(iter(datamodule.train_dataloader()))
    assert inputs.shape[1] == 10 and torch.equal(inputs[:, 1:], targets[:, :-1])


def test_validation_windows_come_in_a_fixed_random_order_so_a_prefix_samples_the_split(tmp_path: Path) -> None:
    text = "".join(f"{i:05d}," for i in range(500))  # 3,000 characters, no window like another
    datamodule = LanguageModelDataModule(source=write(tmp_path / "text.txt", text), context_length=8, val_fraction=0.4)
    val_ids = datamodule.ready().ids["val"]
    windows = datamodule.splits["val"]
    starts = [next(s for s in range(0, len(val_ids) - 8, 8) if torch.equal(val_ids[s : s + 9], w)) for w in windows]
    assert sorted(starts) == list(range(0, 8 * len(windows), 8))  # every chunk once, each whole
    first_tenth = starts[: len(starts) // 10]
    assert max(first_tenth) - min(first_tenth) > len(val_ids) / 2  # the first batches span the split
    again = LanguageModelDataModule(source=write(tmp_path / "text.txt", text), context_length=8, val_fraction=0.4)
    assert torch.equal(again.ready().splits["val"], windows)  # the same order every time


def test_shakespeare_is_the_complete_works() -> None:
    datamodule = LanguageModelDataModule(context_length=256)
    datamodule.ready()
    assert datamodule.vocab_size == 4 + 84 and datamodule.chars_per_token == 1.0
    # Windows overlap by one token, so windows * 256 + 1 tokens cover each part (up to one window's rest;
    # training keeps one window's room for its shifts).
    covered = sum(len(windows) * 256 for windows in datamodule.splits.values())
    assert 5_057_198 - 4 * 257 < covered <= 5_057_198


def test_training_windows_shift_within_their_chunk_anew_each_epoch(tmp_path: Path) -> None:
    text = "".join(chr(ord("A") + i % 50) + chr(ord("a") + i // 50 % 26) for i in range(1300))  # 2,600 characters
    datamodule = LanguageModelDataModule(source=write(tmp_path / "text.txt", text), context_length=16, batch_size=8)
    datamodule.ready()
    train = datamodule.ids["train"]
    loader = datamodule.train_dataloader()
    starts_by_epoch = []
    for epoch in (0, 1, 0):
        loader.sampler.set_epoch(epoch)
        starts = {}
        for batch_indices, (inputs, targets) in zip(loader.batches(), loader, strict=True):
            assert torch.equal(inputs[:, 1:], targets[:, :-1])
            for index, window in zip(batch_indices.tolist(), inputs, strict=True):
                # The window is the training text from a start within its own chunk of 16 tokens.
                matches = [s for s in range(index * 16, index * 16 + 16) if torch.equal(train[s : s + 16], window)]
                assert len(matches) == 1
                starts[index] = matches[0]
        starts_by_epoch.append(starts)
    assert starts_by_epoch[0] == starts_by_epoch[2]  # drawn from seed and epoch: a resumed run sees the same
    assert starts_by_epoch[0] != starts_by_epoch[1]
    assert len({start % 16 for start in starts_by_epoch[0].values()}) > 8  # offsets spread over the chunk


def test_generated_pairs_are_right_and_deterministic() -> None:
    for source, target in generate_pairs("reverse", 50, 1, 8, seed=1):
        assert target == source[::-1]
    for source, target in generate_pairs("sort", 50, 1, 8, seed=1):
        assert target == "".join(sorted(source))
    for source, target in generate_pairs("addition", 50, 1, 4, seed=1):
        left, right = source.split("+")
        assert int(target) == int(left) + int(right)
    assert generate_pairs("reverse", 20, 1, 8, seed=1) == generate_pairs("reverse", 20, 1, 8, seed=1)
    assert generate_pairs("reverse", 20, 1, 8, seed=1) != generate_pairs("reverse", 20, 1, 8, seed=2)


def test_seq2seq_splits_are_disjoint_and_targets_framed(tmp_path: Path) -> None:
    datamodule = Seq2SeqDataModule(source="sort", num_examples=2000, max_length=8)
    datamodule.ready()
    sources = {name: {tuple(s.tolist()) for s in split[0]} for name, split in datamodule.splits.items()}
    assert sources["train"].isdisjoint(sources["test"]) and sources["train"].isdisjoint(sources["val"])
    _, target = next(iter(datamodule.val_dataloader()))
    assert (target[:, 0] == BOS_ID).all()
    assert ((target == EOS_ID).sum(1) == 1).all()
    tsv = write(tmp_path / "pairs.tsv", "source\ttarget\n" + "".join(f"hello {i}\tbonjour {i}\n" for i in range(40)))
    user = Seq2SeqDataModule(source=tsv, tokenizer="word", val_fraction=0.1, test_fraction=0.1)
    assert sum(len(split[0]) for split in user.ready().splits.values()) == 40


def test_time_series_is_split_by_time_and_normalised_on_training_data(tmp_path: Path) -> None:
    values = np.arange(150.0)  # the value is the time step
    source = write(tmp_path / "series.csv", "value\n" + "".join(f"{v}\n" for v in values))
    datamodule = TimeSeriesDataModule(
        source=source, columns=["value"], window=5, horizon=2, val_fraction=0.2, test_fraction=0.2
    )
    datamodule.ready()
    assert datamodule.mean[0] == pytest.approx(values[:90].mean())  # training part: the first 60% (90 steps)
    restore = lambda x: np.rint(x.numpy() * datamodule.std[0] + datamodule.mean[0])  # noqa: E731
    train_targets, val_targets, test_targets = (restore(datamodule.splits[s][1]) for s in ("train", "val", "test"))
    assert train_targets.max() < 90 <= val_targets.min() and val_targets.max() < 120 <= test_targets.min()
    assert len(train_targets) == 90 - 5 - 1  # every step after the first window, up to the horizon's end
    window, target = datamodule.splits["test"][0][0], datamodule.splits["test"][1][0]
    assert restore(window).ravel().tolist() == [115.0, 116.0, 117.0, 118.0, 119.0]  # looks back into val
    assert restore(target).ravel().tolist() == [120.0, 121.0]
    assert datamodule.num_features == 1 and datamodule.horizon == 2


def test_builtin_sunspots() -> None:
    datamodule = TimeSeriesDataModule(source="sunspots", window=24)
    datamodule.ready()
    total = sum(len(split[1]) for split in datamodule.splits.values())
    assert total == 309 - 24  # yearly 1700-2008: every year after the first window is a target once


@pytest.mark.parametrize(
    ("content", "columns", "message"),
    [
        ("value\n1\nabc\n3\n", ["value"], "not a number"),
        ("value\n1\nnan\n3\n", ["value"], "missing value"),
        ("value\n" + "1\n" * 20, ["value"], "too short for a window of 24"),
    ],
)
def test_bad_time_series(tmp_path: Path, content: str, columns: list[str], message: str) -> None:
    source = write(tmp_path / "series.csv", content)
    with pytest.raises(ConfigError, match=message):
        TimeSeriesDataModule(source=source, columns=columns, window=24).ready()
