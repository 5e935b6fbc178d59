"""`python -m experiments.compare` on three real runs: the differing keys, the order, a readable PNG."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from experiments.compare import main as compare
from experiments.run import main as run


@pytest.fixture(scope="module")
def three_runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("compare")
    for lr, logger in (("0.003", "wandb"), ("0.0003", "csv"), ("0.00003", "none")):  # trackers don't matter
        args = ["--config", "cnn_digits", "--trainer.max_epochs", "3", "--model.lr", lr, "--run.logger", logger]
        assert run([*args, "--run.root", str(root)]) == 0
    return root / "cnn_digits"


def test_compare_prints_differing_keys_sorted_by_metric(three_runs: Path, tmp_path: Path, capsys) -> None:
    output = tmp_path / "curves.png"
    assert compare([str(three_runs), "--output", str(output)]) == 0
    lines = capsys.readouterr().out.splitlines()
    header = lines[0].split()
    assert header[:2] == ["run", "model.lr"]  # the only config key that differs (run.logger aside)
    assert "run.logger" in header and "test/acc" in header and "model.net.channels" not in header
    rows = [line.split() for line in lines[1:4]]
    accuracies = [float(row[header.index("test/acc")]) for row in rows]
    assert accuracies == sorted(accuracies, reverse=True)  # accuracy: best first
    assert rows[0][1] == "0.003"  # the largest learning rate learns most in 3 epochs
    assert lines[4].endswith(str(output))
    with Image.open(output) as image:
        assert image.format == "PNG" and image.width > 500 and image.height > 300
        colours = image.convert("RGB").getcolors(maxcolors=1 << 20)
        assert colours is not None and len(colours) > 20  # lines and text, not a blank canvas


def test_compare_sorts_ascending_for_losses(three_runs: Path, tmp_path: Path, capsys) -> None:
    assert compare([str(three_runs), "--sort", "test/loss", "--output", str(tmp_path / "c.png")]) == 0
    lines = capsys.readouterr().out.splitlines()
    column = lines[0].split().index("test/loss")
    losses = [float(line.split()[column]) for line in lines[1:4]]
    assert losses == sorted(losses)


@pytest.mark.parametrize(
    ("args", "message"),
    [(["nowhere"], "nowhere not found"), (["EMPTY"], "no runs"), (["RUNS", "--sort", "test/bleu"], "no run has")],
)
def test_compare_mistakes(args: list[str], message: str, three_runs: Path, tmp_path: Path, capsys) -> None:
    (tmp_path / "empty").mkdir()
    paths = {"EMPTY": str(tmp_path / "empty"), "RUNS": str(three_runs)}
    assert compare([paths.get(a, a) for a in args] + ["--output", str(tmp_path / "c.png")]) == 2
    assert message in capsys.readouterr().err
