"""Sequence tagging data: sentences as words, one tag per word (part of speech, or named entities in BIO).

The built-in corpus is Google's Turkish Web Treebank (forum, blog and Wikipedia sentences, universal
part-of-speech tags), from the PyPI wheel `turkish-treebanks==1.0.0` (Apache-2.0, sha256 pinned below). Its
tokens are inflectional groups: a word such as "açıklanmayan" is four tokens, joined by the relation `ig`,
each with a tag of its own. A word here is its groups joined again, tagged with its last group's tag (the
part of speech of the whole word, as Universal Dependencies' Turkish treebanks tag it): 66,466 words in 4,851
sentences. Its own split is kept: per file, sentence i is in test if i % 10 == 9, validation if 8, training
otherwise.

Your own corpus: a CoNLL-U file (the word and UPOS columns), or a CoNLL-2003-style column file (the first
column the word, the last its tag, a blank line between sentences), split by sentence with `seed`.
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any, Literal

import torch

from datamodules.remote import Artifact, fetch
from datamodules.sequence_base import SequenceDataModule, pad
from datamodules.splits import SPLITS, check_splits, group_split
from datamodules.text_sources import read_text_file
from datamodules.word_vocabulary import WordVocabulary, words_of
from validation import ConfigError, check_range

TURKISH_TREEBANKS = Artifact(
    "turkish-treebanks==1.0.0",
    "turkish_treebanks-1.0.0-py3-none-any.whl",
    "5a009c29a8e96e8f7e25059d59ac293c3baead6d746bf0fa4c9d3349b1e37ba0",
    binary=True,
)
IGNORED = -100  # the tag of padding: cross-entropy and the metrics skip it
Sentence = tuple[list[str], list[str]]  # (words, tags)


def conllu_sentences(text: str, where: str, join_groups: bool = False) -> list[Sentence]:
    """The (words, UPOS tags) of each sentence of a CoNLL-U text. Multiword-token ranges (1-2) and empty
    nodes (1.1) are skipped: the words are the syntactic ones. `join_groups`: tokens linked to the next by the
    relation `ig` (inflectional groups) become one word, tagged as its last group."""
    sentences: list[Sentence] = []
    words: list[str] = []
    tags: list[str] = []
    pending = ""
    for number, line in enumerate(text.split("\n"), 1):
        line = line.rstrip("\r")
        if not line.strip():
            if words:
                sentences.append((words, tags))
            words, tags, pending = [], [], ""
            continue
        if line.startswith("#"):
            continue
        fields = line.split("\t")
        if len(fields) != 10:
            raise ConfigError(f"{where}: line {number} has {len(fields)} tab-separated columns, not CoNLL-U's 10")
        if "-" in fields[0] or "." in fields[0]:
            continue
        if join_groups and fields[7] == "ig":
            pending += fields[1]
            continue
        words.append(pending + fields[1])
        tags.append(fields[3])
        pending = ""
    if words:
        sentences.append((words, tags))
    return sentences


def column_sentences(text: str, where: str) -> list[Sentence]:
    """The (words, tags) of each sentence of a CoNLL-2003-style file: word first, tag last on each line, a
    blank line between sentences; -DOCSTART- lines are skipped."""
    sentences: list[Sentence] = []
    words: list[str] = []
    tags: list[str] = []
    for number, line in enumerate(text.split("\n"), 1):
        fields = line.split()
        if not fields or fields[0] == "-DOCSTART-":
            if words:
                sentences.append((words, tags))
            words, tags = [], []
            continue
        if len(fields) < 2:
            raise ConfigError(f"{where}: line {number} holds a word without a tag; write the tag last on its line")
        words.append(fields[0])
        tags.append(fields[-1])
    if words:
        sentences.append((words, tags))
    return sentences


def turkish_web() -> dict[str, list[Sentence]]:
    """The Turkish Web Treebank's sentences by split (its own: sentence i of each file is test where
    i % 10 == 9, validation where 8)."""
    splits: dict[str, list[Sentence]] = {name: [] for name in SPLITS}
    with zipfile.ZipFile(fetch(TURKISH_TREEBANKS)) as wheel:
        for member in ("data/web.conllu", "data/wiki.conllu"):
            text = wheel.read(member).decode("utf-8")
            for index, sentence in enumerate(conllu_sentences(text, member, join_groups=True)):
                splits[{9: "test", 8: "val"}.get(index % 10, "train")].append(sentence)
    return splits


# The built-in corpora: name -> its sentences by split. `SourceName` lists the same names for the command line.
BUILTIN_CORPORA = {"turkish_web": turkish_web}
SourceName = Literal["turkish_web"]


def read_corpus(path: Path) -> list[Sentence]:
    """A file of yours: CoNLL-U (.conllu) or columns (anything else)."""
    if not path.is_file():
        raise ConfigError(f"--data.source {path} not found; give 'turkish_web', a .conllu file or a column file")
    text = read_text_file(path)
    sentences = conllu_sentences(text, str(path)) if path.suffix == ".conllu" else column_sentences(text, str(path))
    if not sentences:
        raise ConfigError(f"{path} holds no tagged sentence; write one word and its tag per line")
    return sentences


def split_sentences(sentences: list[Sentence], val: float, test: float, seed: int) -> dict[str, list[Sentence]]:
    """A seeded split by sentence (`datamodules.splits`: sentence i's split is drawn from a hash of i)."""
    assignment = group_split(map(str, range(len(sentences))), val, test, seed)
    return {name: [s for s, chosen in zip(sentences, assignment, strict=True) if chosen == name] for name in SPLITS}


class TaggingDataModule(SequenceDataModule):
    """Tagged sentences -> batches (word ids (B, T) padded with `pad_id`, tag ids (B, T) padded with -100).

    Args:
        source: "turkish_web" (the Turkish Web Treebank's part-of-speech tags, its own split), a CoNLL-U file
            (.conllu: its words and UPOS tags), or a column file (a word and its tag per line, the tag last;
            a blank line between sentences), split by sentence.
        vocab_size: the most words in the vocabulary (those of the training split seen at least twice).
        max_length: the most words of a sentence; longer training sentences are cut, and a longer new
            sentence is refused.
        batch_size: training batch size; evaluation batches are twice as large.
        bucket: batch sentences of similar length together.
        val_fraction: share of the sentences of your file held out for validation.
        test_fraction: share held out for testing.
        seed: seed of your file's split and of the shuffling order.
    """

    model_facts = ("vocab_size", "pad_id", "num_classes")
    input_kind = "texts"

    def __init__(
        self,
        source: SourceName | str = "turkish_web",
        vocab_size: int = 30000,
        max_length: int = 128,
        batch_size: int = 32,
        bucket: bool = True,
        val_fraction: float = 0.1,
        test_fraction: float = 0.1,
        seed: int = 0,
    ) -> None:
        super().__init__(batch_size, seed, bucket)
        check_range("vocab_size", vocab_size, 8)
        check_range("max_length", max_length, 1)
        check_range("val_fraction", val_fraction, 0.0, 0.5, low_open=True)
        check_range("test_fraction", test_fraction, 0.0, 0.5, low_open=True)
        self.save_hyperparameters(logger=False)
        self.classes: list[str] = []  # the tags, sorted
        self.sentences: dict[str, list[Sentence]] = {}  # split -> its sentences as read

    def read(self) -> dict[str, list[Sentence]]:
        hp = self.hparams
        if hp["source"] in BUILTIN_CORPORA:
            return BUILTIN_CORPORA[hp["source"]]()
        sentences = read_corpus(Path(hp["source"]))
        return split_sentences(sentences, hp["val_fraction"], hp["test_fraction"], hp["seed"])

    def build(self) -> None:
        hp = self.hparams
        self.sentences = self.read()
        train = self.sentences["train"]
        self.classes = check_splits(
            str(hp["source"]),
            {name: len(sentences) for name, sentences in self.sentences.items()},
            {name: {tag for _, tags in sentences for tag in tags} for name, sentences in self.sentences.items()},
            what="sentences",
        )
        self.tokenizer = WordVocabulary.train(train, hp["vocab_size"])
        tag_ids = {tag: index for index, tag in enumerate(self.classes)}
        for name, sentences in self.sentences.items():
            words = [self.encode_words(sentence[: hp["max_length"]]) for sentence, _ in sentences]
            tags = [torch.tensor([tag_ids[t] for t in tags[: hp["max_length"]]]) for _, tags in sentences]
            self.splits[name] = (words, tags)
            self.lengths[name] = torch.tensor([len(w) for w in words])

    def encode_words(self, words: list[str]) -> torch.Tensor:
        """Words -> their ids (T,), one each (`WordVocabulary.encode_word`)."""
        assert isinstance(self.tokenizer, WordVocabulary)  # made by `build`, or restored from a checkpoint
        return torch.tensor([self.tokenizer.encode_word(word) for word in words], dtype=torch.long)

    def fetch(self, split: str, indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        words, tags = self.splits[split]
        chosen = indices.tolist()
        return pad([words[i] for i in chosen], self.pad_id), pad([tags[i] for i in chosen], IGNORED)

    def encode_inputs(self, items: list[str]) -> torch.Tensor:
        """New sentences -> word ids (B, T), padded; a sentence longer than `max_length` words is refused."""
        limit = self.hparams["max_length"]
        encoded = []
        for number, text in enumerate(items, 1):
            words = words_of(text)
            if len(words) > limit:
                raise ConfigError(f"input {number} has {len(words)} words; this model tags at most {limit} at once")
            encoded.append(self.encode_words(words))
        return pad(encoded, self.pad_id)

    def input_words(self, text: str) -> list[str]:
        """The words of a new sentence, as `encode_inputs` reads them (the answers name them)."""
        return words_of(text)

    def inference_state(self) -> dict[str, Any]:
        return {**super().inference_state(), "classes": self.classes}

    def load_inference_state(self, state: dict[str, Any]) -> None:
        super().load_inference_state(state)
        self.classes = list(state["classes"])

    @property
    def num_classes(self) -> int:
        self.ready()
        return len(self.classes)
