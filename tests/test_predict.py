"""`python -m experiments.predict`: a trained run answers new inputs from its checkpoint alone, exactly as the
model answers the same inputs inside training, and bad input is one line with nothing written.

(Every preset predicting on inputs of its kind: tests/test_presets.py.)"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from datamodules.image import ImageDataModule
from experiments.predict import main as predict
from experiments.run import main as run
from experiments.trained import load_trained
from tests.helpers import REPO, run_module
from validation import NOT_PLAIN

SHORT = ["--trainer.max_epochs=1", "--run.logger=none"]


def listing(folder: Path) -> dict[str, float]:
    return {str(p): p.stat().st_mtime for p in sorted(folder.rglob("*"))}


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A digits CNN trained for 2 epochs (about 95% test accuracy), in a folder of its own."""
    folder = tmp_path_factory.mktemp("digits")
    root = folder / "runs"
    assert run(["--config", "cnn_digits", "--trainer.max_epochs=2", "--run.logger=none", f"--run.root={root}"]) == 0
    (run_dir,) = (root / "cnn_digits").iterdir()
    return run_dir


def save_test_images(folder: Path, count: int) -> tuple[list[str], torch.Tensor, torch.Tensor]:
    """The first `count` test images of digits as PNG files, with the stored uint8 images and labels."""
    datamodule = ImageDataModule(dataset="digits")
    datamodule.setup()
    images, labels = datamodule.splits["test"]
    paths = []
    for index in range(count):
        path = folder / f"test-{index}.png"
        Image.fromarray(images[index, 0].numpy()).save(path)
        paths.append(str(path))
    return paths, images[:count], labels[:count]


def test_answers_equal_the_models_own_on_the_same_images(digits_run: Path, tmp_path: Path) -> None:
    paths, images, labels = save_test_images(tmp_path, 40)
    output = tmp_path / "answers.jsonl"
    assert predict([str(digits_run), *paths, "--output", str(output), "--batch_size", "16"]) == 0
    answers = [json.loads(line) for line in output.read_text().splitlines()]
    assert [a["input"] for a in answers] == paths
    # The same model applied to the same images through training's own pipeline (normalised by the datamodule
    # that trained it) gives the same probabilities: the checkpoint's statistics are the training split's.
    trained = load_trained(str(digits_run))
    datamodule = ImageDataModule(dataset="digits")
    datamodule.setup()
    inputs, _ = datamodule.prepare_batch((images, labels), training=False)
    with torch.no_grad():
        expected = trained.task(inputs).softmax(-1)
    got = torch.tensor([list(a["probabilities"].values()) for a in answers])
    assert torch.allclose(got, expected, atol=1e-4)
    correct = sum(int(a["prediction"]) == label for a, label in zip(answers, labels.tolist(), strict=True))
    assert correct >= 0.85 * len(answers)


@pytest.mark.slow
def test_a_moved_run_predicts_without_its_training_data(digits_run: Path, tmp_path: Path) -> None:
    """The run directory copied elsewhere (its summary names checkpoints by their old absolute path) still
    finds its best checkpoint; no dataset is read (the inference state is in the checkpoint)."""
    moved = tmp_path / "elsewhere" / digits_run.name
    shutil.copytree(digits_run, moved)
    paths, _, _ = save_test_images(tmp_path, 3)
    result = run_module("experiments.predict", str(moved), *paths, "--output", str(tmp_path / "a.csv"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    best = json.loads((digits_run / "summary.json").read_text())["best_checkpoint"]
    assert f"{moved}/checkpoints/{Path(best).name}" in result.stderr
    lines = (tmp_path / "a.csv").read_text().splitlines()
    assert lines[0].split(",")[:3] == ["input", "prediction", "confidence"] and len(lines) == 4
    assert lines[0].split(",")[3:] == [f"p({d})" for d in range(10)]


def test_a_folder_of_images_is_predicted_image_by_image(digits_run: Path, tmp_path: Path) -> None:
    folder = tmp_path / "inbox"
    (folder / "nested").mkdir(parents=True)
    save_test_images(folder, 2)
    save_test_images(folder / "nested", 1)
    (folder / "notes.txt").write_text("not an image")
    output = tmp_path / "answers.jsonl"
    assert predict([str(digits_run), str(folder), "--output", str(output)]) == 0
    inputs = [json.loads(line)["input"] for line in output.read_text().splitlines()]
    assert inputs == sorted(inputs) and len(inputs) == 3 and all(name.endswith(".png") for name in inputs)


def image(path: Path, shape: tuple[int, ...]) -> str:
    Image.fromarray(np.zeros(shape, np.uint8)).save(path)
    return str(path)


@pytest.mark.parametrize(
    ("make_args", "message"),
    [
        (lambda d, t: [image(t / "colour.png", (8, 8, 3))], "is a colour image; this model takes grey images"),
        (lambda d, t: [image(t / "big.png", (9, 8))], "is 8x9 pixels; this model takes 8x8 images"),
        (lambda d, t: [str(t / "missing.png")], "missing.png not found"),
        (lambda d, t: [str(t)], "holds no image files"),
        (lambda d, t: [image(t / "a.png", (8, 8)), "--output", str(t / "a.txt")], "must end in .csv or .jsonl"),
        (lambda d, t: [image(t / "a.png", (8, 8)), "--batch_size", "0"], "batch_size must be in [1, inf)"),
        (lambda d, t: ["--prompt", "once upon"], "--prompt is for language models"),
        (lambda d, t: [], "give the images to predict on"),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(
    digits_run: Path, tmp_path: Path, make_args: object, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    args = make_args(digits_run, tmp_path)  # type: ignore[operator]
    before, run_before = listing(tmp_path), listing(digits_run)
    assert predict([str(digits_run), *args]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert listing(tmp_path) == before and listing(digits_run) == run_before


def test_an_existing_output_is_kept_unless_overwrite(
    digits_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    paths, _, _ = save_test_images(tmp_path, 1)
    output = tmp_path / "answers.csv"
    output.write_text("mine\n")
    assert predict([str(digits_run), *paths, "--output", str(output)]) == 2
    assert "exists; give another path, or --overwrite" in capsys.readouterr().err
    assert output.read_text() == "mine\n"
    assert predict([str(digits_run), *paths, "--output", str(output), "--overwrite"]) == 0
    assert output.read_text().startswith("input,prediction")


def test_runs_without_a_checkpoint_and_unsafe_checkpoints_are_refused(
    digits_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    paths, _, _ = save_test_images(tmp_path, 1)
    bare = tmp_path / "runs" / "cnn_digits" / "bare"
    bare.mkdir(parents=True)
    shutil.copy(digits_run / "config.yaml", bare / "config.yaml")
    assert predict(["bare", *paths, "--root", str(tmp_path / "runs")]) == 2
    assert "has no checkpoint; train it to the end, or resume it" in capsys.readouterr().err

    # A checkpoint that would run code when unpickled is refused, never loaded (weights_only).
    unsafe = tmp_path / "unsafe.ckpt"
    checkpoint = torch.load(next((digits_run / "checkpoints").glob("epoch*.ckpt")), weights_only=True)
    checkpoint["payload"] = Path("anything")  # an object outside torch's weights-only allow-list
    torch.save(checkpoint, unsafe)
    assert predict([str(unsafe), *paths]) == 2
    err = capsys.readouterr().err
    assert err == f"error: checkpoint {unsafe} is refused: {NOT_PLAIN}\n"


@pytest.fixture(scope="module")
def sentiment_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("sentiment")
    small = ["--model.net.dim=32", "--model.net.num_layers=1", "--trainer.limit_train_batches=10"]
    limits = ["--trainer.limit_val_batches=2", "--trainer.limit_test_batches=2", f"--run.root={folder / 'runs'}"]
    assert run(["--config", "transformer_sentiment", *SHORT, *small, *limits]) == 0
    (run_dir,) = (folder / "runs" / "transformer_sentiment").iterdir()
    return run_dir


@pytest.mark.slow
def test_texts_come_from_arguments_a_file_or_stdin_alike(sentiment_run: Path, tmp_path: Path) -> None:
    texts = ["a gripping, beautifully made film", "tedious and far too long", "fine"]
    outputs = []
    for how in ("arguments", "file", "stdin"):
        output = tmp_path / f"{how}.jsonl"
        args = {"arguments": texts, "file": ["--from_file", str(tmp_path / "texts.txt")], "stdin": []}[how]
        (tmp_path / "texts.txt").write_text("\n".join(texts) + "\n\n")  # a blank line is no input
        stdin = "\n".join(texts) if how == "stdin" else None
        result = run_module(
            "experiments.predict", str(sentiment_run), *args, "--output", str(output), cwd=REPO, input=stdin
        )
        assert result.returncode == 0, result.stderr
        assert "confidence" in result.stdout.splitlines()[0]
        outputs.append([json.loads(line) for line in output.read_text().splitlines()])
    assert outputs[0] == outputs[1] == outputs[2]
    assert [row["input"] for row in outputs[0]] == texts
    assert {row["prediction"] for row in outputs[0]} <= {"fresh", "rotten"}


def test_an_empty_text_is_refused(sentiment_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert predict([str(sentiment_run), "good", "  "]) == 2
    assert capsys.readouterr().err == "error: input 2 is an empty text; give some words\n"


def test_a_file_given_to_a_text_model_is_never_read_as_its_name(
    sentiment_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    image = tmp_path / "image.png"
    Image.new("L", (8, 8)).save(image)
    output = tmp_path / "answers.jsonl"
    assert predict([str(sentiment_run), "good", str(image), "--output", str(output)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {image} is a file, and this model reads texts: give a file of texts (one per")
    assert len(err.strip().splitlines()) == 1 and not output.exists()
    long = "a gripping film " * 30  # longer than a file name may be: a text, not a path to look up
    assert predict([str(sentiment_run), long, "--output", str(output)]) == 0, capsys.readouterr().err
    assert len(output.read_text().splitlines()) == 1


def test_a_sequence_longer_than_a_file_name_is_read_as_letters() -> None:
    from datamodules.input_kinds import GivenInputs, read_sequences

    (record,), names = read_sequences(GivenInputs(["ACGT" * 80]), {})
    assert names == ["sequence-1"]
    assert record.id == "sequence-1" and record.sequence == "ACGT" * 80


def test_every_datamodule_names_a_kind_of_input_of_the_table() -> None:
    """Each datamodule's `input_kind` is read, explained and sampled by one entry of `KINDS` (or it takes none)."""
    import importlib
    import pkgutil

    import datamodules
    from datamodules.base import DataModule
    from datamodules.input_kinds import KINDS

    for module in pkgutil.iter_modules(datamodules.__path__):
        importlib.import_module(f"datamodules.{module.name}")
    stack, kinds = list(DataModule.__subclasses__()), {}
    while stack:
        cls = stack.pop()
        stack += cls.__subclasses__()
        kinds[cls.__qualname__] = cls.input_kind
    assert {"ImageDataModule", "TextClassificationDataModule", "TimeSeriesDataModule"} <= set(kinds)
    assert all(kind in ("", *KINDS) for kind in kinds.values()), kinds
    assert all(name == kind.name for name, kind in KINDS.items())
