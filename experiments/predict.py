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
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from datamodules.input_kinds import GivenInputs, input_kind
from experiments.command_line import add_run_arguments, command_parser, ends_cleanly
from experiments.explain import explained_kind, explained_lines, explanations
from experiments.outputs import check_output, commit
from experiments.trained import Trained, load_trained
from validation import ConfigError, check_range

OPTIONS = ("max_new_tokens", "temperature", "top_k")  # of the tasks' `predictions`, each a flag below
SHOWN_CHARACTERS = 60  # of an input or an answer, in the printed table (files keep them whole)


def collect_inputs(args: argparse.Namespace, trained: Trained) -> tuple[list[Any], list[str]]:
    """(the inputs as `encode_inputs` takes them, a name for each to show), read as the model's kind of input
    is read (`datamodules.input_kinds`)."""
    kind = input_kind(trained.datamodule)
    given = GivenInputs(list(args.inputs), args.from_file, args.prompt)
    items, names = kind.read(given, trained.datamodule.hparams)
    if not items:
        raise ConfigError(f"no inputs; give {kind.described}")
    return items, names


def prediction_options(args: argparse.Namespace, task: Any) -> dict[str, Any]:
    """The options of `task.predictions` given on the command line (the others keep the task's defaults); an
    option the task does not take is refused."""
    given = {name: getattr(args, name) for name in OPTIONS if getattr(args, name) is not None}
    taken = task.prediction_options
    for name in given:
        if name not in taken:
            takes = f"takes only {', '.join(f'--{n}' for n in taken)}" if taken else "takes no options"
            raise ConfigError(f"--{name} does not apply to this model ({type(task).__name__} {takes}); leave it out")
    return given


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
            encoded = trained.datamodule.encode_inputs(chunk)
            rows += trained.task.predictions(encoded, trained.datamodule, items=chunk, **options)
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
    parser.add_argument("--temperature", type=float, help="language models: sampling temperature (default 1)")
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
    check_range("batch_size", args.batch_size, 1)
    if args.temperature is not None:
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
    options = prediction_options(args, trained.task)
    items, names = collect_inputs(args, trained)
    torch.manual_seed(args.seed)
    explained = (
        explanations(trained, items, names, args.explain_dir, args.explain_class, args.overwrite)
        if args.explain
        else []
    )
    rows = predict(trained, items, args.batch_size, options)
    print(f"model: {trained.checkpoint} ({trained.note})", file=sys.stderr)
    print(trained.task.printed_answers(names, rows) or table(names, rows))
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
