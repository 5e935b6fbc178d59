"""Reports in the run directory (callbacks.local_report), readable without W&B: the confusion matrix and the
sample grid as PNG files of a short digits run, drawn from the counts W&B charts; text samples for a language
model, nothing for a forecaster; and the titled explanation picture of `predict --explain`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from callbacks.local_report import confusion_geometry, shade
from experiments.predict import main as predict
from experiments.run import main as run
from tests.helpers import logged_tables
from tests.preset_runs import LIMITS

SHORT = [*LIMITS, "--run.logger=none"]


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The digits CNN after two epochs, W&B offline (its confusion chart is the reference)."""
    root = tmp_path_factory.mktemp("reports")
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("FIRSTLIGHT_RUN_ID", raising=False)
        assert run(["--config", "cnn_digits", "--trainer.max_epochs=2", "--run.root", str(root)]) == 0
    (run_dir,) = (root / "cnn_digits").iterdir()
    return run_dir


def test_a_run_writes_its_confusion_matrices_and_samples_as_pictures(digits_run: Path) -> None:
    report = digits_run / "report"
    names = {"confusion_val.png", "confusion_val.json", "samples_val.png"}
    names |= {name.replace("_val", "_test") for name in names}
    assert {p.name for p in report.iterdir()} == names  # no temporary files left
    for path in report.glob("*.png"):
        with Image.open(path) as image:
            image.load()  # decodes: a whole, valid PNG
            assert image.format == "PNG" and image.width >= 300 and image.height >= 150, path.name
            colours = image.convert("RGB").getcolors(maxcolors=1 << 16)
            assert colours is None or len(colours) > 20, path.name  # drawn on, not blank
            stage = "validation after epoch 1, step 40" if "_val" in path.name else "test of epoch="
            assert image.info["Title"].startswith(stage), image.info
    with Image.open(report / "samples_val.png") as samples:
        assert samples.width > 8 * 64  # 16 digits, eight to a line, each scaled up from 8x8


def test_the_confusion_picture_shows_the_counts_that_wandb_charts(digits_run: Path) -> None:
    saved = json.loads((digits_run / "report" / "confusion_val.json").read_text())
    assert saved["classes"] == [str(digit) for digit in range(10)]
    counts = np.array(saved["counts"])
    assert counts.shape == (10, 10) and counts.sum() == 144  # every validation digit, once
    charted = logged_tables(digits_run, "val/confusion_matrix_table")[-1]["data"]  # the final validation's
    from_wandb = np.zeros((10, 10), dtype=int)
    for actual, predicted, count in charted:
        from_wandb[int(actual), int(predicted)] = count
    assert (counts == from_wandb).all()
    summary = json.loads((digits_run / "summary.json").read_text())
    assert np.trace(counts) / 144 == pytest.approx(summary["val/acc"], abs=1e-6)
    # Each cell is shaded by its share of the row: read the colour of every cell's corner.
    left, top, cell = confusion_geometry(saved["classes"])
    with Image.open(digits_run / "report" / "confusion_val.png") as picture:
        pixels = np.asarray(picture.convert("RGB"))
    shares = counts / counts.sum(1, keepdims=True)
    for true in range(10):
        for guess in range(10):
            corner = pixels[top + true * cell + 2, left + guess * cell + 2]
            assert tuple(corner) == shade(shares[true, guess]), (true, guess)


@pytest.mark.parametrize(
    ("preset", "expected"),
    [("lstm_shakespeare", {"samples_val.txt", "samples_test.txt"}), ("lstm_sunspots", set())],
)
def test_tasks_without_classes_write_what_fits_them(preset: str, expected: set[str], in_tmp: Path) -> None:
    """A language model's generated text as a text file, no confusion matrix; a forecaster nothing at all."""
    assert run(["--config", preset, *SHORT]) == 0
    (run_dir,) = (in_tmp / "runs" / preset).iterdir()
    report = run_dir / "report"
    written = {p.name for p in report.iterdir()} if report.exists() else set()
    assert written == expected
    if expected:
        text = (report / "samples_val.txt").read_text()
        assert text.startswith("validation after epoch 0") and text.count("--- example") == 4
        assert "prompt: " in text and "generated: " in text


def test_the_explanation_picture_is_titled_with_the_predicted_class_and_its_probability(
    digits_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from sklearn.datasets import load_digits

    path = tmp_path / "seven.png"
    Image.fromarray((load_digits().images[7] * 16).astype(np.uint8)).save(path)
    assert predict([str(digits_run), str(path), "--explain", "--explain_dir", str(tmp_path / "why")]) == 0
    predicted, probability = capsys.readouterr().out.splitlines()[-1].split()[1:3]  # "001-seven.png  7 (0.97): ..."
    with Image.open(tmp_path / "why" / "001-seven.png") as picture:
        title, note = picture.info["Title"], picture.info["Description"]
        assert picture.width > 3 * 192 and picture.height > 192
        rgb = np.asarray(picture.convert("RGB")).astype(int)
    assert title.startswith(f"seven.png: predicted {predicted}, p = ")
    assert float(title.split("p = ")[1]) == pytest.approx(float(probability.strip("():")), abs=0.005)
    assert note.startswith("integrated gradients from a black image: sum ")
    # The colour scale: a column running from deep blue at the bottom to deep red at the top.
    reds = (rgb[..., 0] > 200) & (rgb[..., 2] < 60)
    blues = (rgb[..., 2] > 200) & (rgb[..., 0] < 60)
    columns = np.flatnonzero((reds.sum(0) > 20) & (blues.sum(0) > 20))
    assert len(columns) > 5
    column = columns[len(columns) // 2]
    assert np.flatnonzero(reds[:, column]).mean() < np.flatnonzero(blues[:, column]).mean()
