"""Tokenizers trained on the training split only and saved with the run.

Every kind shares the ids of the special tokens (`datamodules.special_tokens`): <pad>=0, <unk>=1, <bos>=2, <eos>=3.
- "char": one id per character; our own, because it encodes 5 M characters in well under a second.
- "word": Hugging Face `tokenizers` WordLevel over lower-cased words and punctuation.
- "bpe": Hugging Face `tokenizers` byte-level BPE (lossless: decode(encode(text)) == text).

A pretrained model's own tokenizer (`load_pretrained_tokenizer`: a directory saved with `save_pretrained`, or
a tokenizer.json) keeps its own ids; its `SpecialIds` say which frame and pad a text (BERT: [CLS] text [SEP],
padded with [PAD]).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np

from datamodules.special_tokens import BOS_ID, FIRSTLIGHT_IDS, PAD_ID, SPECIALS, UNK_ID, SpecialIds
from packaged import is_packaged, packaged_folder
from validation import ConfigError, first_line, require

TokenizerKind = Literal["char", "word", "bpe"]


class Tokenizer(Protocol):
    vocab_size: int

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: Sequence[int]) -> str: ...

    def save(self, path: Path) -> None: ...

    def to_json(self) -> str: ...


def encode_all(tokenizer: Tokenizer, texts: list[str]) -> list[list[int]]:
    """The ids of each text, as `tokenizer.encode` gives them: a subword tokenizer encodes the list in one
    call to its Rust batch encoder (4x faster than text by text for the 100,000 phrases of a dictionary)."""
    encode_batch = getattr(tokenizer, "encode_batch", None)
    return encode_batch(texts) if encode_batch is not None else [tokenizer.encode(text) for text in texts]


class CharTokenizer:
    """Characters seen in training get ids 4, 5, ... in sorted order; any other character is <unk>."""

    def __init__(self, chars: Sequence[str]) -> None:
        self.chars = list(chars)
        self.vocab_size = len(SPECIALS) + len(self.chars)
        self.codes = np.array([ord(c) for c in self.chars], dtype=np.uint32)  # sorted code points

    @classmethod
    def train(cls, texts: Iterable[str]) -> CharTokenizer:
        return cls(sorted(set().union(*map(set, texts))))

    def encode_array(self, text: str) -> np.ndarray:
        codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
        positions = np.searchsorted(self.codes, codes).clip(max=max(len(self.codes) - 1, 0))
        known = self.codes[positions] == codes if len(self.codes) else np.zeros(len(codes), bool)
        return np.where(known, positions + len(SPECIALS), UNK_ID).astype(np.int64)

    def encode(self, text: str) -> list[int]:
        return self.encode_array(text).tolist()

    def decode(self, ids: Sequence[int]) -> str:
        offset = len(SPECIALS)
        return "".join(self.chars[i - offset] for i in ids if i >= offset)

    def save(self, path: Path) -> None:
        path.write_text(self.to_json())

    def to_json(self) -> str:
        return json.dumps({"firstlight_char_tokenizer": self.chars})


class SubwordTokenizer:
    """A Hugging Face `tokenizers.Tokenizer` behind the same small interface: firstlight's own (word, bpe), or a
    pretrained model's, whose `special_ids` are that model's. `encode` gives the text's ids alone: the specials
    that a pretrained tokenizer's post-processor would add are left to `classifier_input`."""

    def __init__(self, tokenizer: Any, special_ids: SpecialIds = FIRSTLIGHT_IDS) -> None:
        self.tokenizer = tokenizer
        self.vocab_size = tokenizer.get_vocab_size()
        self.special_ids = special_ids

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return [encoding.ids for encoding in self.tokenizer.encode_batch(texts, add_special_tokens=False)]

    def decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(ids))

    def save(self, path: Path) -> None:
        self.tokenizer.save(str(path))

    def to_json(self) -> str:
        text = self.tokenizer.to_str()
        if self.special_ids == FIRSTLIGHT_IDS:
            return text
        return json.dumps({PRETRAINED_KEY: text, "special_ids": asdict(self.special_ids)})


PRETRAINED_KEY = "firstlight_pretrained_tokenizer"  # a pretrained tokenizer's JSON, with its special ids beside it


def special_ids(tokenizer: Tokenizer) -> SpecialIds:
    """The ids that frame and pad a text for `tokenizer`: a pretrained one's own, else firstlight's."""
    return tokenizer.special_ids if isinstance(tokenizer, SubwordTokenizer) else FIRSTLIGHT_IDS


def classifier_input(tokenizer: Tokenizer, text: str, max_length: int) -> list[int]:
    """A text as a classifier reads it, at most `max_length` ids: [bos] text [sep] (firstlight's tokenizers:
    <bos> text; BERT's: [CLS] text [SEP]). A long text is cut before its [sep], which stays last."""
    ids = special_ids(tokenizer)
    start = [] if ids.bos is None else [ids.bos]
    end = [] if ids.sep is None else [ids.sep]
    return [*start, *tokenizer.encode(text)][: max_length - len(end)] + end


def train_tokenizer(kind: TokenizerKind, texts: list[str], vocab_size: int = 8000) -> CharTokenizer | SubwordTokenizer:
    """Fit a tokenizer of the given kind on `texts` (the training split)."""
    if kind == "char":
        return CharTokenizer.train(texts)
    from tokenizers import Tokenizer as HFTokenizer
    from tokenizers import decoders, models, normalizers, pre_tokenizers, trainers

    if kind == "word":
        tokenizer = HFTokenizer(models.WordLevel(unk_token="<unk>"))
        tokenizer.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
        tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
        trainer: Any = trainers.WordLevelTrainer(
            vocab_size=vocab_size, special_tokens=list(SPECIALS), min_frequency=2, show_progress=False
        )
    else:
        tokenizer = HFTokenizer(models.BPE(unk_token="<unk>"))
        tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tokenizer.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            special_tokens=list(SPECIALS),
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,  # its bars become blank lines in the run's output where it is not a terminal
        )
    tokenizer.train_from_iterator(texts, trainer)
    return SubwordTokenizer(tokenizer)


def load_tokenizer(path: Path) -> Tokenizer:
    """A tokenizer saved with the run (`tokenizer.json`), of any kind."""
    return tokenizer_from_json(path.read_text())


def tokenizer_from_json(text: str) -> Tokenizer:
    """The tokenizer that `to_json` wrote, of any kind (checkpoints hold it as text)."""
    data = json.loads(text)
    if "firstlight_char_tokenizer" in data:
        return CharTokenizer(data["firstlight_char_tokenizer"])
    if "firstlight_kmer_tokenizer" in data:
        from datamodules.kmers import KmerTokenizer

        return KmerTokenizer.from_json(text)
    if "firstlight_tagging_vocabulary" in data:
        from datamodules.word_vocabulary import WordVocabulary

        return WordVocabulary.from_json(text)
    from tokenizers import Tokenizer as HFTokenizer

    if PRETRAINED_KEY in data:
        return SubwordTokenizer(HFTokenizer.from_str(data[PRETRAINED_KEY]), SpecialIds(**data["special_ids"]))
    tokenizer = HFTokenizer.from_str(text)  # firstlight's word or bpe, or a Hugging Face tokenizer.json
    return SubwordTokenizer(tokenizer, read_special_ids(tokenizer, "tokenizer.json"))


# The usual names of special tokens, for a tokenizer.json that does not say which are which.
PAD_NAMES = ("[PAD]", "<pad>", "<|pad|>", "<|padding|>")
BOS_NAMES = ("[CLS]", "<s>", "<cls>", "<bos>", "<|begin_of_text|>", "<|startoftext|>")


def read_special_ids(tokenizer: Any, where: str) -> SpecialIds:
    """The special ids of a Hugging Face `tokenizers.Tokenizer`: firstlight's where its vocabulary starts with
    firstlight's specials; else [bos] and [sep] from its post-processor (the template its model was trained
    with, e.g. "[CLS] $A [SEP]"), or a [CLS]/<s> token; the padding id from its padding settings or a
    [PAD]/<pad> token."""
    if tokenizer.token_to_id("<pad>") == PAD_ID and tokenizer.token_to_id("<bos>") == BOS_ID:
        return FIRSTLIGHT_IDS
    config = json.loads(tokenizer.to_str())
    bos, sep = template_ids(config.get("post_processor") or {})
    if bos is None and sep is None:
        bos = next((i for i in map(tokenizer.token_to_id, BOS_NAMES) if i is not None), None)
    pad = (config.get("padding") or {}).get("pad_id")
    if pad is None:
        pad = next((i for i in map(tokenizer.token_to_id, PAD_NAMES) if i is not None), None)
    if pad is None:
        raise ConfigError(
            f"tokenizer {where} names no padding token ({' or '.join(PAD_NAMES[:2])}); give the directory its model "
            "was saved in with save_pretrained, whose tokenizer_config.json names it"
        )
    return SpecialIds(pad=int(pad), bos=bos, sep=sep)


def template_ids(processor: dict[str, Any]) -> tuple[int | None, int | None]:
    """The ids a `tokenizers` post-processor puts before and after a single text: (bos, sep), None where none."""
    kind = processor.get("type")
    if kind == "Sequence":
        found = [template_ids(p) for p in processor.get("processors", [])]
        return next((ids for ids in found if ids != (None, None)), (None, None))
    if kind in ("BertProcessing", "RobertaProcessing"):
        return int(processor["cls"][1]), int(processor["sep"][1])
    if kind != "TemplateProcessing" or not processor.get("single"):
        return None, None
    specials = processor.get("special_tokens", {})

    def special(piece: dict[str, Any]) -> int | None:
        token = piece.get("SpecialToken")
        return int(specials[token["id"]]["ids"][0]) if token and specials.get(token["id"], {}).get("ids") else None

    return special(processor["single"][0]), special(processor["single"][-1])


def load_pretrained_tokenizer(source: str) -> SubwordTokenizer:
    """A pretrained model's tokenizer: a directory saved with `save_pretrained` (its tokenizer.json, or the
    vocabulary files that `transformers` converts, e.g. BERT's vocab.txt), read with `transformers`, which
    names its special tokens; a tokenizer.json file, whose special tokens `read_special_ids` finds; or the
    tokenizer of packaged weights, `package:<name>` (`packaged.PACKAGED`), set up in the cache."""
    path = packaged_folder(source) if is_packaged(source) else Path(source).expanduser()
    if not path.exists():
        raise ConfigError(
            f"pretrained tokenizer {source} not found: give a directory saved with save_pretrained (e.g. the "
            "pretrained model's) or a tokenizer.json file"
        )
    from tokenizers import Tokenizer as HFTokenizer

    if path.is_file():
        try:
            tokenizer = HFTokenizer.from_file(str(path))
        except Exception as error:  # tokenizers raises a bare Exception for a file it cannot read
            raise ConfigError(f"{source} is not a Hugging Face tokenizer.json: {first_line(error)}") from None
        ids = read_special_ids(tokenizer, source)
    else:
        transformers = require("transformers", f"a pretrained tokenizer directory ({source})")
        try:
            loaded = transformers.AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        except (OSError, ValueError, KeyError) as error:
            raise ConfigError(f"pretrained tokenizer {source} does not load: {first_line(error)}") from None
        backend = getattr(loaded, "backend_tokenizer", None)  # transformers' own Python tokenizers have none
        if backend is None:
            raise ConfigError(f"pretrained tokenizer {source} has no `tokenizers` version (tokenizer.json)")
        # GPT-2 and its like have no padding token; Hugging Face pads them with their end-of-text token.
        pad = loaded.pad_token_id if loaded.pad_token_id is not None else loaded.eos_token_id
        if pad is None:
            raise ConfigError(f"pretrained tokenizer {source} has no padding (or end-of-text) token")
        bos = loaded.cls_token_id if loaded.cls_token_id is not None else loaded.bos_token_id
        ids = SpecialIds(pad=int(pad), bos=bos, sep=loaded.sep_token_id)
        tokenizer = HFTokenizer.from_str(backend.to_str())
    tokenizer.no_truncation()  # the datamodule cuts texts to its max_length itself, and pads per batch
    tokenizer.no_padding()
    return SubwordTokenizer(tokenizer, ids)
