"""Use a trained model on new inputs, from its checkpoint alone (offline; the training data need not be here).

    python -m experiments.predict runs/cnn_fashion_mnist/RUN shoe.png photos/          # images: files, folders
    python -m experiments.predict RUN_ID "a gripping, beautifully made film"            # texts: arguments,
    python -m experiments.predict RUN_ID --from_file reviews.txt --output answers.csv   #   a file, or stdin
    python -m experiments.predict runs/cnn_speech_commands/RUN clips/                   # audio files
    python -m experiments.predict runs/cnn_oct4_mafk/RUN regions.fa ACGTTGCA...         # FASTA files, letters
    python -m experiments.predict runs/lstm_sunspots/RUN recent.csv                     # series: a CSV of the
    python -m experiments.predict runs/lstm_sunspots/RUN 80 60 40 20 10 5 ...           #   model's columns, or values
    python -m experiments.predict runs/transformer_shakespeare/RUN --prompt "ROMEO:" --max_new_tokens 300
    python -m experiments.predict wandb:me/firstlight/model-RUNID:best shoe.png         # a W&B model artifact
    python -m experiments.predict RUN_ID shoe.png --explain                             # and why: RUN/explain/

Prints a table (input, answer, confidence) and, with --output, writes every answer (with all class
probabilities) as CSV or JSONL. The run is a run directory, a run id (under --root), a .ckpt file, or a W&B
model artifact (`wandb:entity/project/name:alias`, online).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from datamodules.audio_files import AUDIO_EXTENSIONS
from datamodules.fasta import Record, parse_fasta, read_fasta
from datamodules.image_folder import IMAGE_EXTENSIONS
from datamodules.text_sources import read_text_file
from datamodules.timeseries import csv_series
from experiments.command_line import add_run_arguments, command_parser, ends_cleanly, refused
from experiments.explain import explained_kind, explained_lines, explanations
from experiments.outputs import check_output, commit
from experiments.trained import Trained, load_trained
from validation import ConfigError, check_range

SHOWN_CHARACTERS = 60  # of an input or an answer, in the printed table (files keep them whole)


def files_under(paths: list[str], extensions: tuple[str, ...], what: str) -> list[Path]:
    """Files given, and those of the given folders (recursively, sorted) whose suffix is one of `extensions`."""
    found: list[Path] = []
    for value in paths:
        path = Path(value)
        if path.is_dir():
            inside = sorted(p for p in path.rglob("*") if p.suffix.lower() in extensions and p.is_file())
            if not inside:
                raise ConfigError(f"folder {path} holds no {what} files ({', '.join(extensions)})")
            found += inside
        elif path.is_file():
            found.append(path)
        else:
            raise ConfigError(f"{path} not found; give {what} files or folders of them")
    return found


def read_texts(args: argparse.Namespace) -> list[str]:
    """Texts from --prompt, the arguments, --from_file (one per line), or stdin (one per line)."""
    if args.prompt is not None:
        texts = [args.prompt, *args.inputs]
    elif args.from_file:
        texts = [line for line in read_text_file(Path(args.from_file)).split("\n") if line.strip()]
        if not texts:
            raise ConfigError(f"{args.from_file} holds no text; write one input per line")
    elif args.inputs:
        texts = list(args.inputs)
        # os.path.isfile: a long text is no file name (Path.is_file raises "File name too long" for it)
        named = next((text for text in texts if os.path.isfile(text)), None)
        if named is not None:  # a picture or a file of texts given to a text model: never read its name
            raise ConfigError(
                f"{named} is a file, and this model reads texts: give a file of texts (one per line) with "
                f"--from_file {named}, or a text that is also a file's name on stdin"
            )
    elif not sys.stdin.isatty():
        texts = [line.rstrip("\n") for line in sys.stdin if line.strip()]
    else:
        texts = []
    for number, text in enumerate(texts, 1):
        if not text.strip():
            raise ConfigError(f"input {number} is an empty text; give some words")
    return texts


def read_sequences(values: list[str]) -> list[Record]:
    """Records of FASTA files, and letters given as arguments (named sequence-1, sequence-2, ...)."""
    records: list[Record] = []
    for number, value in enumerate(values, 1):
        if os.path.isfile(value):  # a long sequence of letters is no file name (see read_texts)
            records += read_fasta(Path(value))
        elif value.isalpha():
            records += parse_fasta(f">sequence-{number}\n{value}", Path(f"argument {number}"))
        else:
            raise ConfigError(f"{value} is neither a FASTA file nor a sequence of letters")
    return records


def read_series(values: list[str], trained: Trained) -> list[np.ndarray]:
    """One series (T, F), oldest first: a CSV with the model's columns, or the values as arguments."""
    hp = trained.datamodule.hparams
    window = hp["window"]
    columns = list(hp["columns"] or [])
    if len(values) == 1 and Path(values[0]).is_file():
        if not columns:
            raise ConfigError(
                f"this model was trained on the built-in series {hp['source']}; give its last {window} values "
                "as arguments (oldest first)"
            )
        series = csv_series(Path(values[0]), columns)
    else:
        try:
            series = np.array([float(value) for value in values], dtype=np.float64)[:, None]
        except ValueError:
            raise ConfigError(
                "give the series as one CSV file, or as numbers (oldest first); "
                f"{next(v for v in values if not is_number(v))!r} is neither"
            ) from None
        if columns and len(columns) > 1:
            raise ConfigError(f"this model reads {len(columns)} columns ({', '.join(columns)}); give a CSV of them")
    if len(series) < window:
        raise ConfigError(f"this model reads the last {window} values; got {len(series)}")
    if not np.isfinite(series).all():
        raise ConfigError("the series has missing or infinite values; fill them first")
    return [series]


def is_number(value: str) -> bool:
    try:
        float(value)
    except ValueError:
        return False
    return True


def collect_inputs(args: argparse.Namespace, trained: Trained) -> tuple[list[Any], list[str]]:
    """(the inputs as `encode_inputs` takes them, a name for each to show)."""
    kind = trained.datamodule.input_kind
    if kind == "texts":
        texts = read_texts(args)
        return texts, texts
    if args.prompt is not None:
        raise ConfigError("--prompt is for language models; give this model's inputs as arguments")
    if not args.inputs and not (kind == "sequences" and args.from_file):
        raise ConfigError(f"give the {kind} to predict on (see --help)")
    if kind == "images":
        paths = files_under(args.inputs, IMAGE_EXTENSIONS, "image")
        return paths, [str(p) for p in paths]
    if kind == "audio":
        paths = files_under(args.inputs, AUDIO_EXTENSIONS, "audio")
        return paths, [str(p) for p in paths]
    if kind == "sequences":
        records = read_sequences(args.inputs + ([args.from_file] if args.from_file else []))
        return records, [record.id for record in records]
    if kind == "series":
        return read_series(args.inputs, trained), ["series"]
    raise ConfigError(f"the model of {trained.checkpoint} takes no new inputs ({type(trained.datamodule).__name__})")


def batches(items: list[Any], size: int) -> Iterator[list[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def predict(trained: Trained, items: list[Any], batch_size: int, options: dict[str, Any]) -> list[dict[str, Any]]:
    """Answers for every input, a batch at a time (a progress bar on stderr when there are several)."""
    from tqdm import tqdm

    batch_size = trained.task.prediction_batch_size(batch_size)
    rows: list[dict[str, Any]] = []
    with tqdm(total=len(items), unit="input", disable=len(items) <= batch_size, file=sys.stderr) as progress:
        for chunk in batches(items, batch_size):
            rows += trained.task.predictions(trained.datamodule.encode_inputs(chunk), trained.datamodule, **options)
            progress.update(len(chunk))
    return rows


def shorten(value: Any) -> str:
    text = " ".join(str(value).split())
    return text if len(text) <= SHOWN_CHARACTERS else text[: SHOWN_CHARACTERS - 3] + "..."


def table(names: list[str], rows: list[dict[str, Any]]) -> str:
    """Aligned columns: the input, then each answer column that holds plain values (not dicts)."""
    columns = [key for key, value in rows[0].items() if not isinstance(value, dict)]
    lines = [["input", *columns]] + [
        [shorten(name), *(shorten(row[key]) for key in columns)] for name, row in zip(names, rows, strict=True)
    ]
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip() for line in lines
    )


def written(names: list[str], rows: list[dict[str, Any]], suffix: str) -> str:
    """The answers as JSONL (one object per input) or CSV (dicts spread into columns, e.g. p(sandal))."""
    records = [{"input": name, **row} for name, row in zip(names, rows, strict=True)]
    if suffix == ".jsonl":
        return "".join(json.dumps(record, ensure_ascii=False) + "\n" for record in records)
    flat = []
    for record in records:
        line: dict[str, Any] = {}
        for key, value in record.items():
            if isinstance(value, dict):
                line.update({f"p({name})": p for name, p in value.items()})
            else:
                line[key] = json.dumps(value) if isinstance(value, list) else value
        flat.append(line)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(flat[0]))
    writer.writeheader()
    writer.writerows(flat)
    return buffer.getvalue()


def parser() -> argparse.ArgumentParser:
    parser = command_parser("predict", __doc__)
    add_run_arguments(parser)
    parser.add_argument("inputs", nargs="*", help="images/audio (files, folders), texts, FASTA files, series")
    parser.add_argument("--from_file", help="texts, one per line (or a FASTA file)")
    parser.add_argument("--output", type=Path, help="write the answers to this .csv or .jsonl file")
    parser.add_argument("--overwrite", action="store_true", help="replace --output, and --explain's files, if there")
    parser.add_argument("--batch_size", type=int, default=64, help="inputs per forward pass")
    parser.add_argument("--prompt", help="language models: the text to go on from")
    parser.add_argument("--max_new_tokens", type=int, help="language models and seq2seq: tokens to write")
    parser.add_argument("--temperature", type=float, default=1.0, help="language models: sampling temperature")
    parser.add_argument("--top_k", type=int, help="language models: sample from the k likeliest tokens")
    parser.add_argument("--seed", type=int, default=0, help="language models: seed of the sampling")
    parser.add_argument("--explain", action="store_true", help="classifiers: integrated-gradient explanations")
    parser.add_argument("--explain_dir", type=Path, help="where --explain writes (default: <run dir>/explain)")
    parser.add_argument("--explain_class", help="--explain: the class to explain (default: the predicted one)")
    return parser


def check_answers_file(path: Path | None, overwrite: bool) -> None:
    if path is None:
        return
    if path.suffix not in (".csv", ".jsonl"):
        raise ConfigError(f"--output {path} must end in .csv or .jsonl")
    check_output(path, overwrite, given=True)


@ends_cleanly
def main(argv: list[str] | None = None) -> int:
    args = parser().parse_intermixed_args(argv)
    try:
        check_range("batch_size", args.batch_size, 1)
        check_range("temperature", args.temperature, 0.0, low_open=True)
        for name in ("max_new_tokens", "top_k"):
            if getattr(args, name) is not None:
                check_range(name, getattr(args, name), 1)
        check_answers_file(args.output, args.overwrite)
        if not args.explain and (args.explain_dir or args.explain_class):
            raise ConfigError("--explain_dir and --explain_class go with --explain")
        trained = load_trained(args.run, args.root)
        if args.explain:
            explained_kind(trained)  # a model --explain cannot explain fails first
        items, names = collect_inputs(args, trained)
        if not items:
            raise ConfigError("no inputs; give them as arguments, with --from_file, or on stdin")
        torch.manual_seed(args.seed)
        given = {"max_new_tokens": args.max_new_tokens, "temperature": args.temperature, "top_k": args.top_k}
        options = {name: value for name, value in given.items() if value is not None}  # else the task's default
        explained = (
            explanations(trained, items, names, args.explain_dir, args.explain_class, args.overwrite)
            if args.explain
            else []
        )
        rows = predict(trained, items, args.batch_size, options)
    except ConfigError as error:  # a mistake, found before any work
        return refused(error)
    print(f"model: {trained.checkpoint} ({trained.note})", file=sys.stderr)
    print(table(names, rows))
    files: dict[Path, bytes | Path] = {item.path: item.content for item in explained}
    if args.output:
        files[args.output] = written(names, rows, args.output.suffix).encode()
    commit(files)  # the answers and the explanations together, or nothing
    if args.output:
        print(f"wrote {len(rows)} answers to {args.output}", file=sys.stderr)
    for line in explained_lines(explained):
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
