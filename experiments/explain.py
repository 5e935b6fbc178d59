"""`python -m experiments.predict RUN INPUTS --explain`: why a classifier gave its answers, as integrated
gradients (`analysis.attribution`) written beside the run.

    python -m experiments.predict runs/cnn_digits/RUN seven.png --explain        # explain/001-seven.png
    python -m experiments.predict RUN "a gripping film" --explain --explain_dir why/  # why/001-a-gripping-film.html

Images get a PNG each (the input, the attributions, both overlaid: red adds to the class's logit, blue takes
from it; titled with the class and its probability, a colour scale beside), texts and biological sequences an
HTML page each (tokens coloured green for, red against); the printed lines name the class explained, its
strongest tokens, and the completeness check (the attributions sum to the logit's change from the baseline).
The class explained is the predicted one, or --explain_class.
Files go to `<run dir>/explain/` unless --explain_dir says otherwise; existing files are never replaced
without --overwrite, and a mistake (a model that is no classifier, an unknown class) writes nothing.
"""

from __future__ import annotations

import sys

if __name__ == "__main__":  # before the imports below, which take seconds
    print("error: explanations come from `python -m experiments.predict RUN INPUTS --explain`", file=sys.stderr)
    sys.exit(2)

import html
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from analysis.attribution import (
    STEPS,
    Attribution,
    ImageAttribution,
    TokenAttribution,
    completeness,
    heat_map_figure,
    image_attributions,
    image_baseline,
    token_attributions,
    tokens_html,
    top_tokens,
)
from datamodules.input_kinds import InputKind, input_kind
from experiments.outputs import check_folder
from experiments.trained import Trained
from validation import ConfigError

PER_PASS = 8  # inputs explained together (each becomes STEPS points on its path)


@dataclass
class Explanation:
    path: Path
    content: bytes
    line: str  # what to print about it


def explained_kind(trained: Trained) -> InputKind:
    """The model's kind of input, if --explain explains its answers on it (pictures, or tokens)."""
    task, kind = trained.task, input_kind(trained.datamodule)
    if not task.explains_answers:
        raise ConfigError(
            f"--explain explains classifiers' answers; this model is a {type(task).__name__}, which does not "
            "classify; leave --explain out"
        )
    if kind.explained_as is None:
        raise ConfigError(f"--explain explains models of images, texts and sequences; this one reads {kind.name}")
    return kind


def explain_folder(trained: Trained, given: Path | None) -> Path:
    if given is not None:
        if given.exists() and not given.is_dir():
            raise ConfigError(f"--explain_dir {given} is a file; give a folder")
        check_folder(given, f"--explain_dir {given}", create=True)
        return given
    if trained.run_dir is None:
        raise ConfigError("this checkpoint is outside a run directory; give --explain_dir for the explanations")
    folder = trained.run_dir / "explain"
    check_folder(folder, str(folder), create=True, fix="give a folder you can write to with --explain_dir")
    return folder


def file_names(names: list[str], kind: InputKind) -> list[str]:
    """001-seven.png, 002-a-gripping-film.html, ...: numbered in input order, so names never collide."""
    stems = [Path(name).stem if kind.files else name for name in names]
    slugs = [re.sub(r"[^A-Za-z0-9]+", "-", stem).strip("-")[:40].strip("-") or "input" for stem in stems]
    return [f"{number:03d}-{slug}{kind.explanation_suffix}" for number, slug in enumerate(slugs, 1)]


def explanations(
    trained: Trained,
    items: list[Any],
    names: list[str],
    directory: Path | None,
    class_name: str | None,
    overwrite: bool,
    steps: int = STEPS,
) -> list[Explanation]:
    """The files explaining each input (nothing written yet); a mistake raises ConfigError first."""
    kind = explained_kind(trained)
    classes = list(getattr(trained.datamodule, "classes", None) or [])
    if class_name is not None and class_name not in classes:
        raise ConfigError(f"--explain_class {class_name!r} is not one of this model's classes: {', '.join(classes)}")
    folder = explain_folder(trained, directory)
    paths = [folder / name for name in file_names(names, kind)]
    taken = [path for path in paths if path.exists()]
    if taken and not overwrite:
        raise ConfigError(
            f"{taken[0]} exists ({len(taken)} of the explanations' files do); give another --explain_dir, or "
            "--overwrite to replace them"
        )
    class_index = None if class_name is None else classes.index(class_name)
    answers: list[list[tuple[str, Attribution]]] = []  # per input: (what the answer is, its attribution)
    net = trained.task.net
    for start in range(0, len(items), PER_PASS):
        batch = trained.datamodule.encode_inputs(items[start : start + PER_PASS])
        with torch.no_grad():
            outputs = net(batch)
        chosen = trained.task.explained_answers(batch, outputs, trained.datamodule, class_index)
        rows = torch.tensor([row for row, answers_of_row in enumerate(chosen) for _ in answers_of_row])
        targets = [index for answers_of_row in chosen for index, _ in answers_of_row]
        if kind.explained_as == "picture":
            baseline = image_baseline(trained.datamodule, batch, "black")
            results = image_attributions(net, batch[rows], baseline, targets, steps)
        else:
            tokenizer = getattr(trained.datamodule, "tokenizer", None)
            pad_id = trained.task.pad_id
            if pad_id is None:
                raise ConfigError("this model of texts was saved without its padding id; train it again")
            results = token_attributions(net, batch[rows], pad_id, tokenizer, targets, steps)
        taken = iter(results)
        answers += [[(label, next(taken)) for _, label in answers_of_row] for answers_of_row in chosen]
    return [
        explanation(path, name, explained, predicted=class_name is None)
        for path, name, explained in zip(paths, names, answers, strict=True)
    ]


def explanation(path: Path, name: str, answers: list[tuple[str, Attribution]], predicted: bool = True) -> Explanation:
    """The file and the printed line of one input: a picture, or a page of coloured tokens per answer (a
    classifier's one, a tagger's one per word)."""
    if len(answers) == 1 and isinstance(answers[0][1], ImageAttribution):
        explained, result = answers[0]
        which = "predicted" if predicted else "explained (--explain_class)"
        title = f"{Path(name).name[:60]}: {which} {explained}, p = {result.probability:.3f}"
        note = f"integrated gradients from a black image: {completeness(result)}"
        picture = heat_map_figure(result.image, result.scores, title, note)
        line = f"{path.name}  {explained} ({result.probability:.2f}): {completeness(result)}"
        return Explanation(path, picture, line)
    sections = []
    for explained, result in answers:
        assert isinstance(result, TokenAttribution)
        title = (
            f"Attributions to the logit of {explained} (p = {result.probability:.3f}), integrated gradients from "
            f"<pad> vectors: {completeness(result)}. Green adds to it, red takes from it."
        )
        sections.append(tokens_html(result, title))
    page = (
        '<!DOCTYPE html>\n<html><head><meta charset="utf-8">'
        f"<title>{html.escape(name[:80])}</title></head>\n<body>{''.join(sections)}</body></html>\n"
    )
    if len(answers) == 1:
        explained, result = answers[0]
        line = f"{path.name}  {explained} ({result.probability:.2f}): {top_tokens(result)}; {completeness(result)}"
    else:
        worst = max(answers, key=lambda answer: answer[1].relative_error)[1]
        line = f"{path.name}  {len(answers)} answers explained; the largest error: {completeness(worst)}"
    return Explanation(path, page.encode(), line)


def explained_lines(explained: list[Explanation]) -> list[str]:
    """What was written (the files by `experiments.outputs.commit`, their folder made if need be)."""
    if not explained:
        return []
    folder = explained[0].path.parent
    return [f"explanations (integrated gradients) in {folder}:", *(f"  {item.line}" for item in explained)]
