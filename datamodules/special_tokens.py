"""The special tokens that every firstlight tokenizer shares, and how a text is framed and padded.

firstlight's own tokenizers (char, word, bpe in `datamodules.tokenization`, k-mers in `datamodules.kmers`)
give the specials the first ids: <pad>=0, <unk>=1, <bos>=2, <eos>=3, and their vocabulary after them. A
pretrained tokenizer keeps its own ids, named by its `SpecialIds`. Both tokenizer files read these, so they
live here, in a module that imports neither.
"""

from __future__ import annotations

from dataclasses import dataclass

SPECIALS = ("<pad>", "<unk>", "<bos>", "<eos>")
PAD_ID, UNK_ID, BOS_ID, EOS_ID = range(4)


@dataclass(frozen=True)
class SpecialIds:
    """How a classifier's input is framed and padded: [bos] text [sep], then `pad` up to the batch's longest
    (no id where one is None). firstlight's own tokenizers: <bos> text, padded with <pad>."""

    pad: int = PAD_ID
    bos: int | None = BOS_ID
    sep: int | None = None


FIRSTLIGHT_IDS = SpecialIds()
