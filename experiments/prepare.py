"""Prepare a dataset as shards, once, so training streams it with flat memory whatever its size.

    python -m experiments.prepare photos/ prepared/photos               # an image folder -> LitData shards
    python -m experiments.prepare corpus.txt prepared/corpus --tokenizer bpe --vocab_size 8000
    python -m experiments.prepare reviews.csv prepared/reviews --text_column review --label_column stars
    python -m experiments.prepare recordings/ prepared/speech --clip_seconds 1   # class folders of recordings
    python -m experiments.run --config cnn_digits --data.dataset folder --data.data_dir prepared/photos \\
        --data.image_size 160 --data.augment true --data.hflip true
    python -m experiments.run --config lstm_sentiment --data.source prepared/reviews

The kind follows from the source (a folder of class sub-folders: images; a .csv/.tsv/.jsonl file: texts with
labels for classification, or recordings where the first row's --path_column names one; a folder whose
first class folder holds recordings: audio; another text file: a corpus of token ids for language models) or
from --kind. The work runs in --workers processes with a progress line; a prepare that stops (Ctrl-C, SIGTERM,
a crash) goes on where it stopped when the same command is run again, and the output is a dataset only once
its manifest is written, last. The manifest records the classes, tokenizer and statistics, so training and
`predict` need nothing else. Mistakes are one line and exit code 2.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path

from experiments.command_line import command_parser, refused
from experiments.outputs import Terminated, raise_terminated  # (SIGTERM, as KeyboardInterrupt is Ctrl-C)
from validation import ConfigError, check_range, require

KINDS = ("images", "corpus", "texts", "audio", "fasta", "pairs")
FASTA = (".fa", ".fasta", ".fna", ".faa", ".ffn", ".fas")  # as datamodules.fasta.FASTA_SUFFIXES (kept light here)
TABLES = (".csv", ".tsv", ".jsonl", ".json")  # files of texts with labels, as TextClassificationDataModule reads


def guess_kind(source: Path, path_column: str = "path") -> str:
    if source.is_dir() and any(path.suffix.lower() in FASTA for path in source.iterdir()):
        return "fasta"  # a folder of one FASTA file per class
    if source.is_file() and source.suffix.lower() in FASTA:
        return "fasta"
    if source.is_dir():  # audio where the first class folder holds recordings
        from datamodules.audio_files import holds_audio

        return "audio" if holds_audio(source) else "images"
    if source.is_file():
        if source.suffix.lower() in TABLES:  # audio where the first row's path_column names a recording
            from datamodules.audio_files import table_holds_audio

            return "audio" if table_holds_audio(source, path_column) else "texts"
        return "corpus"
    raise ConfigError(f"{source} not found; give an image folder or a text file to prepare")


# The datamodule that reads each kind, and its default split: a dataset prepared with the defaults trains with
# the datamodule's defaults (it refuses a prepared split other than its own settings). tests/test_streaming.py
# checks this table against the datamodules' signatures.
READERS = {
    "images": ("datamodules.image.ImageDataModule", 0.1, 0.2),
    "texts": ("datamodules.text.TextClassificationDataModule", 0.1, 0.1),
    "corpus": ("datamodules.language_model.LanguageModelDataModule", 0.05, 0.05),
    "audio": ("datamodules.audio.AudioDataModule", 0.1, 0.1),
    "fasta": ("datamodules.biosequence.FastaDataModule", 0.1, 0.1),
    "pairs": ("datamodules.seq2seq.Seq2SeqDataModule", 0.1, 0.1),
}


def prepare(args: argparse.Namespace) -> str:
    """Prepare as the arguments say; a line on what was written comes back."""
    kind = args.kind or guess_kind(args.source, args.path_column)
    _, val_fraction, test_fraction = READERS[kind]
    args.val_fraction = val_fraction if args.val_fraction is None else args.val_fraction
    args.test_fraction = test_fraction if args.test_fraction is None else args.test_fraction
    check_range("--val_fraction", args.val_fraction, 0.0, 0.5, low_open=True)
    check_range("--test_fraction", args.test_fraction, 0.0, 0.5, low_open=True)
    common = {  # the arguments every kind's prepare takes
        "val_fraction": args.val_fraction,
        "test_fraction": args.test_fraction,
        "workers": args.workers or os.cpu_count() or 1,
        "overwrite": args.overwrite,
    }
    if kind == "images":
        from datamodules.image_shards import prepare_images

        manifest = prepare_images(
            args.source,
            args.output,
            **common,
            seed=args.seed,
        )
        unit = "images"
    elif kind == "texts":
        from datamodules.text_shards import prepare_texts

        manifest = prepare_texts(
            args.source,
            args.output,
            **common,
            seed=args.seed,
            text_column=args.text_column,
            label_column=args.label_column,
            group_column=args.group_column,
            tokenizer=args.tokenizer or "word",
            vocab_size=20000 if args.vocab_size is None else args.vocab_size,
            max_length=128 if args.max_length is None else args.max_length,
        )
        unit = "texts"
    elif kind == "fasta":
        from datamodules.fasta_shards import prepare_fasta

        manifest = prepare_fasta(
            args.source,
            args.output,
            **common,
            seed=args.seed,
            labels=args.labels,
            id_column=args.id_column,
            label_column=args.label_column,
            label_pattern=args.label_pattern,
            alphabet=args.alphabet,
            unknown=args.unknown,
            k=args.k,
            stride=args.stride,
            max_length=1000 if args.max_length is None else args.max_length,
        )
        unit = "records"
    elif kind == "pairs":
        from datamodules.pair_shards import prepare_pairs

        manifest = prepare_pairs(
            args.source,
            args.output,
            **common,
            seed=args.seed,
            tokenizer=args.tokenizer or "char",
            vocab_size=8000 if args.vocab_size is None else args.vocab_size,
            max_chars=args.max_chars,
        )
        unit = "pairs"
    elif kind == "audio":
        require("soundfile", "preparing recordings")  # before the workers start
        from datamodules.audio_shards import prepare_audio

        manifest = prepare_audio(
            args.source,
            args.output,
            **common,
            seed=args.seed,
            path_column=args.path_column,
            label_column=args.label_column,
            group_column=args.group_column,
            sample_rate=args.sample_rate,
            resample=args.resample,
            clip_seconds=args.clip_seconds,
            skip_unreadable=args.skip_unreadable,
        )
        unit = "clips"
    else:
        from datamodules.token_corpus import prepare_corpus

        manifest = prepare_corpus(
            args.source,
            args.output,
            **common,
            tokenizer=args.tokenizer or "char",
            vocab_size=4096 if args.vocab_size is None else args.vocab_size,
        )
        unit = "tokens"
    sizes = ", ".join(f"{split} {count:,}" for split, count in manifest.splits.items())
    return f"prepared {args.output} ({kind}: {sizes} {unit})"


def parser() -> argparse.ArgumentParser:
    parser = command_parser("prepare", "Prepare a dataset as shards, once, so training streams it with flat memory.")
    parser.add_argument("source", type=Path, help="an image folder (one sub-folder per class) or a text file")
    parser.add_argument("output", type=Path, help="a new or empty folder for the shards")
    parser.add_argument("--kind", choices=KINDS, help="what the source holds (default: from the source)")
    parser.add_argument("--workers", type=int, help="processes that prepare in parallel (default: every CPU)")
    parser.add_argument("--val_fraction", type=float, help="share held out for validation (default: as training's)")
    parser.add_argument("--test_fraction", type=float, help="share held out for testing (default: as training's)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the split and of the order of the images")
    parser.add_argument(
        "--tokenizer", choices=("char", "word", "bpe"), help="corpus: char (default) or bpe; texts: word (default)"
    )
    parser.add_argument("--vocab_size", type=int, help="bpe, word: vocabulary size (corpus 4096, texts 20000)")
    parser.add_argument("--text_column", default="text", help="texts: the column holding the text")
    parser.add_argument("--label_column", default="label", help="texts, audio: the column holding the label")
    parser.add_argument("--group_column", help="texts, audio: a column whose values stay in one split")
    parser.add_argument("--max_length", type=int, help="texts (128), fasta (1000): tokens per sample at most")
    parser.add_argument("--labels", help="fasta: a CSV/TSV/JSONL of record ids and labels (default: the headers)")
    parser.add_argument("--id_column", default="id", help="fasta: the label table's column of record ids")
    parser.add_argument("--label_pattern", help="fasta: a regex whose first group in a header is its label")
    parser.add_argument("--alphabet", choices=("dna", "protein"), default="dna", help="fasta: the letters' alphabet")
    parser.add_argument("--unknown", choices=("error", "mask"), default="error", help="fasta: ambiguity codes")
    parser.add_argument("--k", type=int, default=1, help="fasta: letters per token")
    parser.add_argument("--stride", type=int, default=1, help="fasta: letters between the starts of tokens")
    parser.add_argument("--max_chars", type=int, help="pairs: keep the pairs of at most this many characters")
    parser.add_argument("--path_column", default="path", help="audio: the column of a table holding each recording")
    parser.add_argument("--sample_rate", type=int, help="audio: the rate clips are used at (default: the first's)")
    parser.add_argument("--resample", action="store_true", help="audio: resample recordings at other rates")
    parser.add_argument("--clip_seconds", type=float, default=1.0, help="audio: clips cut or padded to this length")
    parser.add_argument("--skip_unreadable", action="store_true", help="audio: skip recordings that cannot be read")
    parser.add_argument("--overwrite", action="store_true", help="prepare again over a prepared dataset")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    signal.signal(signal.SIGTERM, raise_terminated)
    again = f"run the same command again to go on: python -m experiments.prepare {' '.join(sys.argv[1:])}"
    try:
        print(prepare(args), file=sys.stderr)
        return 0
    except ConfigError as error:
        return refused(error)
    except KeyboardInterrupt:
        print(f"interrupted: SIGINT; the parts written are kept; {again}", file=sys.stderr)
        return 130
    except Terminated:
        print(f"preempted: SIGTERM; the parts written are kept; {again}", file=sys.stderr)
        return 143


if __name__ == "__main__":
    sys.exit(main())
