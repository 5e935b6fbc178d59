"""Alphabets of biological sequences, the k-mer tokenizer over them, and the reverse complement of DNA.

- DNA: A, C, G, T, and N for an unknown base; U (RNA) is read as T. The other IUPAC ambiguity codes
  (R Y S W K M B D H V) name a set of bases the model cannot see: an error naming the record and position,
  or, with `unknown="mask"`, read as N.
- Protein: the 20 standard amino acids and X for an unknown one; B Z J U O (ambiguous or rare) are an error,
  or X with `unknown="mask"`. A '*' (stop) ending a protein is dropped.

Any other character (a digit, an alignment gap '-' or '.', a '*' inside a protein) is always an error.

The k-mer tokenizer's vocabulary is fixed by the alphabet, not trained: every k-mer of the known letters
gets an id (4, 5, ... in lexicographic order, after the shared specials <pad> <unk> <bos> <eos>), and a
window holding N (or X) is <unk>. k=1 is the character tokenizer. Windows overlap by default (stride 1).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from datamodules.special_tokens import SPECIALS, UNK_ID
from validation import ConfigError

AlphabetKind = Literal["dna", "protein"]
UnknownPolicy = Literal["error", "mask"]
MAX_VOCABULARY = 2_000_000  # k-mer embeddings beyond this are no longer a small model


@dataclass(frozen=True)
class Alphabet:
    letters: str  # the known letters, each a k-mer symbol
    unknown: str  # the letter for "any": N or X
    ambiguous: str  # letters that may be read as `unknown`
    aliases: dict[str, str]  # letters read as another (U -> T)


ALPHABETS = {
    "dna": Alphabet("ACGT", "N", "RYSWKMBDHV", {"U": "T"}),
    "protein": Alphabet("ACDEFGHIKLMNPQRSTVWY", "X", "BZJUO", {}),
}
COMPLEMENT = str.maketrans("ACGTN", "TGCAN")


def reverse_complement(sequence: str) -> str:
    """The other strand of a cleaned DNA sequence, read 5' to 3': ACGTN -> NACGT."""
    return sequence.translate(COMPLEMENT)[::-1]


def clean_sequence(sequence: str, kind: AlphabetKind, unknown: UnknownPolicy, where: str) -> str:
    """Upper case, aliases applied, ambiguity codes refused or masked, any other character refused; `where`
    names the record in the message."""
    alphabet = ALPHABETS[kind]
    sequence = sequence.upper()
    if kind == "protein" and sequence.endswith("*"):
        sequence = sequence[:-1]
    for letter, meaning in alphabet.aliases.items():
        sequence = sequence.replace(letter, meaning)
    allowed = alphabet.letters + alphabet.unknown
    name = "a DNA base" if kind == "dna" else "an amino acid"
    invalid = re.search(f"[^{allowed}{alphabet.ambiguous}]", sequence)  # wrong whatever the policy
    if invalid is not None:
        letter, position = invalid.group(), invalid.start() + 1
        if kind == "dna" and letter in ALPHABETS["protein"].letters:
            hint = "is it a protein? use --data.alphabet protein"
        else:
            hint = f"{name} is one of {allowed}, or an ambiguity code ({alphabet.ambiguous})"
        raise ConfigError(f"{where} has {letter!r} at position {position}, not {name}; {hint}")
    ambiguous = re.search(f"[{alphabet.ambiguous}]", sequence)
    if ambiguous is None:
        return sequence
    if unknown == "mask":
        return sequence.translate(str.maketrans(alphabet.ambiguous, alphabet.unknown * len(alphabet.ambiguous)))
    raise ConfigError(
        f"{where} has {ambiguous.group()!r} at position {ambiguous.start() + 1}, an ambiguity code this model "
        f"cannot read; use --data.unknown mask to read such letters as {alphabet.unknown}, or fix the sequence"
    )


class KmerTokenizer:
    """k-mers of an alphabet's letters, every `stride` letters -> ids; see the module's docstring.

    Args:
        kind: "dna" or "protein".
        k: letters per token (1: characters).
        stride: letters from one token's start to the next: 1 overlaps the k-mers (a sequence of L letters
            is L - k + 1 tokens), k cuts it into words (L // k tokens, k times shorter for a recurrent model).
    """

    def __init__(self, kind: AlphabetKind, k: int, stride: int = 1) -> None:
        self.kind = kind
        self.k = k
        self.stride = stride
        self.letters = ALPHABETS[kind].letters
        self.unknown = ALPHABETS[kind].unknown
        base = len(self.letters)
        if base**k > MAX_VOCABULARY:
            raise ConfigError(f"k={k} gives {base}^{k} {kind} k-mers, more than {MAX_VOCABULARY:,}; use a smaller k")
        if not 1 <= stride <= k:
            raise ConfigError(f"stride must be between 1 and k={k} (letters between tokens' starts), got {stride}")
        self.vocab_size = len(SPECIALS) + base**k
        self.codes = np.full(256, -1, dtype=np.int64)  # byte -> letter index, -1 for N/X
        self.codes[np.frombuffer(self.letters.encode(), dtype=np.uint8)] = np.arange(base)
        self.powers = base ** np.arange(k - 1, -1, -1)  # most significant letter first: lexicographic ids

    def encode(self, sequence: str) -> list[int]:
        """A cleaned sequence of L letters -> (L - k) // stride + 1 ids (none if L < k); letters after the
        last whole window are left out."""
        letters = self.codes[np.frombuffer(sequence.encode("ascii"), dtype=np.uint8)]  # (L,)
        if len(letters) < self.k:
            return []
        windows = np.lib.stride_tricks.sliding_window_view(letters, self.k)[:: self.stride]  # (tokens, k)
        ids = windows @ self.powers + len(SPECIALS)
        return np.where((windows < 0).any(1), UNK_ID, ids).tolist()

    def covered(self, tokens: int) -> int:
        """How many letters `tokens` tokens span from the sequence's start."""
        return (tokens - 1) * self.stride + self.k if tokens else 0

    def kmer(self, token: int) -> str:
        """The letters of one id; <unk> is k unknown letters (its window held at least one)."""
        if token == UNK_ID:
            return self.unknown * self.k
        index, letters = token - len(SPECIALS), []
        for _ in range(self.k):
            index, letter = divmod(index, len(self.letters))
            letters.append(self.letters[letter])
        return "".join(reversed(letters))

    def decode(self, ids: Sequence[int]) -> str:
        """Ids -> the letters they span: the first k-mer, then the last `stride` letters of each next one
        (specials other than <unk> skipped). Exact without N; a letter read through an <unk> shows as N."""
        kmers = [self.kmer(i) for i in ids if i == UNK_ID or i >= len(SPECIALS)]
        return kmers[0] + "".join(kmer[self.k - self.stride :] for kmer in kmers[1:]) if kmers else ""

    def save(self, path: Path) -> None:
        path.write_text(self.to_json())

    def to_json(self) -> str:
        return json.dumps({"firstlight_kmer_tokenizer": {"kind": self.kind, "k": self.k, "stride": self.stride}})

    @classmethod
    def from_json(cls, text: str) -> KmerTokenizer:
        settings = json.loads(text)["firstlight_kmer_tokenizer"]
        return cls(settings["kind"], settings["k"], settings["stride"])

    @classmethod
    def load(cls, path: Path) -> KmerTokenizer:
        return cls.from_json(path.read_text())
