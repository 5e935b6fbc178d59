"""`python -m experiments.compare` on three real runs: the differing keys, the order, a readable PNG."""

from __future__ import annotations

import json
import shutil
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


DAMAGE = {
    "summary.json": '{"test/acc": 0.9',  # cut short
    "history.jsonl": "not a record\n",  # a damaged line amid good ones
    "config.yaml": "model: [unclosed\n",
}
SUMMARY_PROBLEM = "{path} is damaged (Expecting ',' delimiter: line 1 column 17 (char 16))"


def damage(run_dir: Path, name: str) -> Path:
    path = run_dir / name
    if name == "history.jsonl":
        lines = path.read_text().splitlines(keepends=True)
        path.write_text("".join([lines[0], DAMAGE[name], *lines[1:]]))
    else:
        path.write_text(DAMAGE[name])
    return path


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("summary.json", SUMMARY_PROBLEM),
        ("history.jsonl", "{path} line 2 is damaged (not JSON); delete that line to go on"),
        (
            "config.yaml",
            "YAML syntax error in {path}, line 2, column 1: expected ',' or ']', but got '<stream end>'; fix the file",
        ),
    ],
)
def test_a_damaged_run_is_left_out_and_the_rest_compared(
    name: str, problem: str, three_runs: Path, tmp_path: Path, capsys
) -> None:
    runs = tmp_path / "cnn_digits"
    shutil.copytree(three_runs, runs)
    damaged = sorted(runs.iterdir())[1]
    path = damage(damaged, name)
    assert compare([str(runs), "--output", str(tmp_path / "c.png")]) == 0
    captured = capsys.readouterr()
    assert captured.err.splitlines() == [f"warning: left out cnn_digits/{damaged.name}: {problem.format(path=path)}"]
    lines = captured.out.splitlines()
    assert lines[0].split()[:2] == ["run", "model.lr"] and damaged.name not in captured.out
    assert len(lines) == 1 + 2 + 2 and lines[-1] == "compared 2 of 3 runs; 1 damaged, left out (see the warnings)"


def test_nothing_readable_is_one_line_and_a_damaged_sweep_state_is_named(
    three_runs: Path, tmp_path: Path, capsys
) -> None:
    runs = tmp_path / "cnn_digits"
    shutil.copytree(three_runs, runs)
    (runs / "sweep.json").write_text('{"trials": ')
    assert compare([str(runs), "--output", str(tmp_path / "c.png")]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"sweep cnn_digits: {runs / 'sweep.json'} is damaged (Expecting value: line 1")

    only = sorted(runs.iterdir())[0]
    path = damage(only, "summary.json")
    assert compare([str(only), "--output", str(tmp_path / "c.png")]) == 1
    err = capsys.readouterr().err
    problem = SUMMARY_PROBLEM.format(path=path)
    assert err.splitlines() == [f"error: no run could be read: cnn_digits/{only.name}: {problem}"]


def test_a_sweep_whose_every_trial_failed_lists_its_failures(tmp_path: Path, capsys) -> None:
    """The sweep tells the user to compare its trials; with none that made a run, compare says what failed."""
    sweep_dir = tmp_path / "runs" / "digits"
    sweep_dir.mkdir(parents=True)
    trials = {
        str(i): {"index": i, "params": {"model.lr": lr}, "status": "failed", "error": f"error: lr {lr} broke"}
        for i, lr in enumerate([-1, -2])
    }
    (sweep_dir / "sweep.json").write_text(json.dumps({"name": "digits", "trials": trials}))
    assert compare([str(sweep_dir), "--output", str(tmp_path / "c.png")]) == 1
    out, err = capsys.readouterr()
    assert out.splitlines() == [
        "sweep digits: 2 failed",
        "  failed trial 1: error: lr -1 broke",
        "  failed trial 2: error: lr -2 broke",
    ]
    assert err.splitlines() == [f"error: no runs to compare under {sweep_dir}: no trial made a run (see above)"]
    assert not (tmp_path / "c.png").exists()


def scored_copies(three_runs: Path, tmp_path: Path, metric: str, values: list[float]) -> Path:
    """Copies of the three runs, each with `metric` added to its summary.json (in the runs' order)."""
    root = tmp_path / "scored" / "cnn_digits"
    shutil.copytree(three_runs, root)
    for run_dir, value in zip(sorted(p.parent for p in root.glob("*/summary.json")), values, strict=True):
        summary = json.loads((run_dir / "summary.json").read_text())
        (run_dir / "summary.json").write_text(json.dumps(summary | {metric: value}))
    return root


def sorted_column(out: str, metric: str) -> list[float]:
    """The column of `metric` in the printed table (after the sweep's status line, if any)."""
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("run "))
    column = lines[start].split().index(metric)
    return [float(line.split()[column]) for line in lines[start + 1 : start + 4]]


@pytest.mark.parametrize(
    ("metric", "flag", "expected"),
    [
        ("test/bleu", None, [12.0, 7.0, 3.0]),  # BLEU and chrF: higher is better
        ("test/chrf", None, [12.0, 7.0, 3.0]),
        ("test/bpc", None, [3.0, 7.0, 12.0]),  # bits per character: lower is better
        ("test/bleu", "--lower-better", [3.0, 7.0, 12.0]),  # the command's flag over the table
        ("test/iou", "--higher-better", [12.0, 7.0, 3.0]),  # a metric the table does not hold, told which way
    ],
)
def test_compare_knows_which_way_is_better(
    metric: str, flag: str | None, expected: list[float], three_runs: Path, tmp_path: Path, capsys
) -> None:
    root = scored_copies(three_runs, tmp_path, metric, [3.0, 12.0, 7.0])
    assert compare([str(root), "--sort", metric, "--output", str(tmp_path / "c.png"), *([flag] if flag else [])]) == 0
    assert sorted_column(capsys.readouterr().out, metric) == expected


def test_compare_refuses_to_guess_and_follows_a_sweeps_goal(three_runs: Path, tmp_path: Path, capsys) -> None:
    root = scored_copies(three_runs, tmp_path, "test/iou", [3.0, 12.0, 7.0])
    assert compare([str(root), "--sort", "test/iou", "--output", str(tmp_path / "c.png")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "error: which way is better for test/iou is not known; say so with --higher-better or --lower-better"
    (root / "sweep.json").write_text(json.dumps({"metric": "test/iou", "goal": "minimize", "trials": {}}))
    assert compare([str(root), "--sort", "test/iou", "--output", str(tmp_path / "c.png")]) == 0
    assert sorted_column(capsys.readouterr().out, "test/iou") == [3.0, 7.0, 12.0]
