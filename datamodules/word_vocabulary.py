"""A vocabulary of whole words for tagging, one id per word, with a word's ending standing in for a word it
has not seen; and how new text splits into words as the tagged corpora split it. A run saves it as its
`tokenizer.json` (`datamodules.tokenization.tokenizer_from_json` reads it back, as it reads the others).
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

from datamodules.special_tokens import SPECIALS, UNK_ID

# A word of new text: letters and digits, with what joins them inside a word (Ankara'ya, 1.5, 25/02,
# ntvmsnbc.com); or a run of other marks (".", "...", "(").
WORD = re.compile(r"\w+(?:['’.,:/&+-]\w+)*|[^\w\s]+")

JSON_KEY = "firstlight_tagging_vocabulary"  # what `to_json` writes it under
ENDINGS = (3, 2, 1)  # the lengths of word endings that stand for a word outside the vocabulary, longest first


def words_of(text: str) -> list[str]:
    """New text -> its words and marks, as the corpus separates them."""
    return WORD.findall(text)


def normal(word: str) -> str:
    return unicodedata.normalize("NFKC", word).lower()


class WordVocabulary:
    """Word ids for tagging, one per word: the training words seen at least twice, then the word endings (last
    three, two or one letters) of the other training words, seen at least twice. A word outside the vocabulary
    is read as its longest known ending (Turkish "-yor" says verb, "-ler" noun), else <unk>; the training words
    seen once are read so too, which teaches the model what endings mean. Words are NFKC-normalised and
    lower-cased. Ids 0-3 are firstlight's specials (<pad>, <unk>, <bos>, <eos>)."""

    def __init__(self, words: list[str], endings: list[str]) -> None:
        self.words, self.endings = list(words), list(endings)
        entries = [*SPECIALS, *self.words, *(f"-{ending}" for ending in self.endings)]
        self.entries = entries
        self.ids = {entry: index for index, entry in enumerate(entries)}
        self.vocab_size = len(entries)

    @classmethod
    def train(cls, sentences: Iterable[tuple[list[str], list[str]]], vocab_size: int) -> WordVocabulary:
        """From the training sentences, (words, tags) each."""
        counts = Counter(normal(word) for words, _ in sentences for word in words)
        room = vocab_size - len(SPECIALS)
        frequent = [word for word, count in counts.most_common() if count >= 2][:room]
        known = set(frequent)
        ending_counts = Counter(
            word[-size:] for word, count in counts.items() if word not in known for size in ENDINGS if len(word) > size
        )
        endings = [ending for ending, count in ending_counts.most_common() if count >= 2][: room - len(frequent)]
        return cls(frequent, endings)

    def encode_word(self, word: str) -> int:
        word = normal(word)
        found = self.ids.get(word)
        if found is not None and found >= len(SPECIALS):
            return found
        for size in ENDINGS:
            if len(word) > size and f"-{word[-size:]}" in self.ids:
                return self.ids[f"-{word[-size:]}"]
        return UNK_ID

    def encode(self, text: str) -> list[int]:
        return [self.encode_word(word) for word in words_of(text)]

    def decode(self, ids: Sequence[int]) -> str:
        """The words (or endings, "-yor") of the ids, space-separated; specials decode to nothing."""
        return " ".join(self.entries[i] for i in ids if i >= len(SPECIALS))

    def save(self, path: Path) -> None:
        path.write_text(self.to_json())

    def to_json(self) -> str:
        return json.dumps({JSON_KEY: {"words": self.words, "endings": self.endings}})

    @classmethod
    def from_json(cls, text: str) -> WordVocabulary:
        data = json.loads(text)[JSON_KEY]
        return cls(data["words"], data["endings"])
