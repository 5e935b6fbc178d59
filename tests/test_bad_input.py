"""User mistakes: exit code 2, one line naming the problem, no traceback, nothing written."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
from pathlib import Path

import pytest
import torch

from experiments.run import main
from tests.helpers import run_cli, write_images


def write(path: Path, text: str) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return str(path)


def folder_without_images(root: Path) -> str:
    for name in ("a", "b"):
        (root / "images" / name).mkdir(parents=True)
    write(root / "images" / "b" / "notes.txt", "not an image")
    return str(root / "images")


def csv(root: Path, name: str, text: str, encoding: str = "utf-8") -> str:
    path = root / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode(encoding))
    return str(path)


def reviews(rows: int, label: callable = lambda i: "pos" if i % 2 else "neg") -> str:  # type: ignore[valid-type]
    return "text,label\n" + "".join(
        f"review number {i} is {'good' if i % 2 else 'bad'},{label(i)}\n" for i in range(rows)
    )


def label_seen_only_in_test(root: Path) -> str:
    """Reviews where label "meh" occurs once, on a row that the seeded split puts in the test split."""
    from datamodules.splits import group_split

    assignment = group_split([str(i) for i in range(200)], 0.1, 0.1, 0)
    lone = assignment.index("test")
    return csv(root, "reviews.csv", reviews(200, lambda i: "meh" if i == lone else ("pos" if i % 2 else "neg")))


def series(values: list[str]) -> str:
    return "year,value\n" + "".join(f"{1900 + i},{v}\n" for i, v in enumerate(values))


def images_of_two_sizes(root: Path) -> str:
    write_images(root / "mixed", {"a": 0, "b": 100}, count=3)
    from PIL import Image

    Image.new("L", (12, 9)).save(root / "mixed" / "a" / "odd.png")
    return str(root / "mixed")


def split_folders_with_other_classes(root: Path) -> str:
    write_images(root / "split" / "train", {"a": 0, "b": 100}, count=3)
    write_images(root / "split" / "test", {"a": 0, "c": 100}, count=3)
    return str(root / "split")


SENTIMENT = ["--config", "lstm_sentiment", "--data.source"]
SUNSPOTS = ["--config", "lstm_sunspots", "--data.columns", "[value]", "--data.source"]

# (case id, arguments (given after the digits preset unless they name a --config), words the message must contain)
CASES = [
    ("unknown-model", lambda t: ["--model", "no.such.Model"], "no.such.Model"),
    ("unknown-dataset", lambda t: ["--data.dataset", "imagenet"], "Expected one of ['fashion_mnist'"),
    (
        "wrong-type",
        lambda t: ["--model.init_args.lr", "fast"],
        'Parser key "lr": Expected a float. Got value: fast',
    ),
    ("negative-lr", lambda t: ["--model.lr", "-0.1"], "lr must be in (0.0, inf), got -0.1"),
    ("zero-batch-size", lambda t: ["--data.batch_size", "0"], "batch_size must be in [1, inf), got 0"),
    ("dropout-above-1", lambda t: ["--model.net.dropout", "1.5"], "dropout must be in [0.0, 0.999], got 1.5"),
    ("unknown-option", lambda t: ["--model.init_args.layers", "3"], "layers"),
    ("unknown-core-option", lambda t: ["--model.net.layers", "3"], "layers"),
    ("unknown-core", lambda t: ["--model.net", "cores.cnn.NoSuchCore"], "cores.cnn.NoSuchCore"),
    (
        "fsdp-on-cpu",
        lambda t: ["--trainer.strategy", "fsdp", "--trainer.accelerator", "cpu"],
        "trainer: The strategy `fsdp` requires a GPU accelerator",
    ),
    ("wrong-epochs-type", lambda t: ["--trainer.max_epochs", "many"], "trainer.max_epochs"),
    ("missing-config", lambda t: ["--config", str(t / "nope.yaml")], "nope.yaml not found"),
    ("empty-config", lambda t: ["--config", write(t / "empty.yaml", "")], "empty.yaml holds nothing, not a mapping"),
    ("list-config", lambda t: ["--config", write(t / "list.yaml", "- 1\n")], "list.yaml holds a list, not a mapping"),
    (
        "yaml-syntax",
        lambda t: ["--config", write(t / "bad.yaml", "model:\n  init_args: {lr: 0.1\ntrainer: 1\n")],
        "YAML syntax error in",
    ),
    ("folder-without-data-dir", lambda t: ["--data.dataset", "folder"], "needs --data.data_dir"),
    (
        "missing-data-dir",
        lambda t: ["--data.dataset", "folder", "--data.data_dir", str(t / "absent")],
        "does not exist",
    ),
    (
        "empty-data-dir",
        lambda t: [
            "--data.dataset",
            "folder",
            "--data.data_dir",
            str(t.joinpath("empty").mkdir() or t / "empty"),
        ],
        "needs one sub-folder per class",
    ),
    (
        "folder-without-images",
        lambda t: ["--data.dataset", "folder", "--data.data_dir", folder_without_images(t)],
        "no images found",
    ),
    ("too-many-stages", lambda t: ["--model.net.channels", "[8, 8, 8, 8]"], "too small for 4 pooling stages"),
    ("unknown-preset", lambda t: ["--config", "cnn_imagenet"], "config file cnn_imagenet not found; give a path"),
    ("unknown-optimizer", lambda t: ["--model.optimizer", "adagrad"], "Expected one of ['sgd', 'adam'"),
    ("depths-mismatch", lambda t: ["--model.net.depths", "[1]"], "depths needs one count of at least 1 per entry"),
    ("val-fraction-too-large", lambda t: ["--data.val_fraction", "0.9"], "val_fraction must be in (0.0, 0.5]"),
    ("image-size-zero", lambda t: ["--data.image_size", "0"], "image_size must be in [1, inf), got 0"),
    ("seed-not-a-number", lambda t: ["--seed_everything", "abc"], "seed_everything"),
    ("seed-negative", lambda t: ["--seed_everything", "-1"], "seed_everything must be in [0, 4294967295], got -1"),
    ("seed-beyond-numpy", lambda t: ["--seed_everything", "4294967296"], "must be in [0, 4294967295], got 4294967296"),
    ("experiment-leaving-the-root", lambda t: ["--run.experiment", "../mine"], "--run.experiment must be a plain name"),
    ("gpu-without-gpu", lambda t: ["--trainer.accelerator", "gpu"], "trainer: "),
    ("resume-unknown-run", lambda t: ["--run.resume", "no-such-run"], "no-such-run"),
    ("nan-lr", lambda t: ["--model.lr", "nan"], "Expected a float. Got value: nan"),
    ("infinite-lr", lambda t: ["--model.lr", "inf"], "Expected a float. Got value: inf"),
    (
        "infinite-lr-in-a-config-file",
        lambda t: ["--config", write(t / "inf.yaml", "model:\n  init_args:\n    lr: .inf\n")],
        "lr must be in (0.0, inf), got inf",
    ),
    (
        "nan-in-a-config-file",
        lambda t: ["--config", write(t / "nan.yaml", "model:\n  init_args:\n    weight_decay: .nan\n")],
        "weight_decay must be in [0.0, inf), got nan",
    ),
    (
        "validation-interval-longer-than-the-epoch",
        lambda t: ["--trainer.val_check_interval", "100"],
        "trainer: `val_check_interval` (100) must be less than or equal to the number of the training batches (20)",
    ),
    ("no-training-batches", lambda t: ["--trainer.limit_train_batches", "0"], "limit_train_batches 0 trains nothing"),
    ("no-epochs", lambda t: ["--trainer.max_epochs", "0"], "--trainer.max_epochs 0 trains nothing"),
    ("no-steps", lambda t: ["--trainer.max_steps", "0"], "--trainer.max_steps 0 trains nothing"),
    (
        "run-root-is-a-file",
        lambda t: ["--run.root", write(t / "runs", "not a folder")],
        "is a file, not a folder; choose another --run.root",
    ),
    (
        "run-root-below-a-file",
        lambda t: ["--run.root", str(Path(write(t / "runs", "not a folder")) / "deeper")],
        "is a file, not a folder",
    ),
    ("monitor-unknown-metric", lambda t: ["--checkpoint.monitor", "val/nope"], "val/nope is not a metric"),
    (
        "images-of-different-sizes",
        lambda t: ["--data.dataset", "folder", "--data.data_dir", images_of_two_sizes(t)],
        "have different sizes (12x9 and 6x5); set --data.image_size",
    ),
    (
        "test-classes-differ",
        lambda t: ["--data.dataset", "folder", "--data.data_dir", split_folders_with_other_classes(t)],
        "differ from those of the training folder (a, b)",
    ),
    ("csv-missing", lambda t: [*SENTIMENT, str(t / "none.csv")], "none.csv not found"),
    ("csv-empty", lambda t: [*SENTIMENT, csv(t, "empty.csv", "")], "empty.csv is empty"),
    ("csv-header-only", lambda t: [*SENTIMENT, csv(t, "header.csv", "text,label\n")], "header.csv has no rows"),
    (
        "csv-no-label-column",
        lambda t: [*SENTIMENT, csv(t, "t.csv", "text,stars\ngood,5\nbad,1\n")],
        "t.csv has no column label (found: text, stars)",
    ),
    (
        "csv-not-utf8",
        lambda t: [*SENTIMENT, csv(t, "latin.csv", "text,label\ncafé,pos\n", "latin-1")],
        "latin.csv is not UTF-8 text (byte",
    ),
    (
        "csv-one-label",
        lambda t: [*SENTIMENT, csv(t, "one.csv", reviews(60, lambda i: "pos"))],
        "have 1 label(s); need 2",
    ),
    (
        "label-only-in-test",
        lambda t: [*SENTIMENT, label_seen_only_in_test(t)],
        "labels meh occur only outside the training",
    ),
    (
        "series-with-nan",
        lambda t: [*SUNSPOTS, csv(t, "nan.csv", series(["1.0"] * 50 + ["nan"] + ["2.0"] * 50))],
        "nan.csv has a missing value (row 52)",
    ),
    (
        "series-not-numbers",
        lambda t: [*SUNSPOTS, csv(t, "words.csv", series(["1.0"] * 50 + ["many"] + ["2.0"] * 50))],
        "a value is not a number",
    ),
    (
        "series-too-short",
        lambda t: [*SUNSPOTS, csv(t, "short.csv", series(["1.0"] * 20))],
        "is too short for a window of",
    ),
    (
        "series-without-columns",
        lambda t: ["--config", "lstm_sunspots", "--data.source", csv(t, "s.csv", series(["1"] * 99))],
        "a CSV source needs --data.columns",
    ),
]


@pytest.mark.parametrize(("arguments", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_user_mistake(arguments, expected, in_tmp: Path, capsys) -> None:
    args = arguments(in_tmp)
    if not any(
        arg == "--config" and value.endswith(("_sentiment", "_sunspots")) for arg, value in itertools.pairwise(args)
    ):
        args = ["--config", "cnn_digits", *args]
    try:
        code = main(args)
    except SystemExit as exit_:
        code = exit_.code
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert expected in lines[0]
    assert "Traceback" not in err
    assert not (in_tmp / "runs").is_dir()


@pytest.mark.slow
def test_a_mistake_from_the_shell_exits_2_without_traceback(tmp_path: Path) -> None:
    result = run_cli(
        "--config",
        "cnn_digits",
        "--data.dataset",
        "folder",
        "--data.data_dir",
        str(tmp_path / "x"),
        cwd=tmp_path,
    )
    assert result.returncode == 2
    missing = tmp_path / "x"
    assert result.stderr.strip().splitlines() == [
        f"error: data_dir {missing} does not exist; point --data.data_dir to a folder of class sub-folders"
    ]
    assert not (tmp_path / "runs").exists()


def test_existing_run_directories_are_never_reused(tmp_path: Path, monkeypatch) -> None:
    from experiments.rundir import create_run_dir

    run_dir = create_run_dir(tmp_path / "runs" / "exp" / "id")
    (run_dir / "summary.json").write_text("{}")
    with pytest.raises(FileExistsError):
        create_run_dir(run_dir)
    assert (run_dir / "summary.json").read_text() == "{}"


def test_any_lightning_module_by_class_path_gets_the_links_it_takes(in_tmp: Path, capsys) -> None:
    code = main(
        [
            "--config", "cnn_digits",
            "--model", "tests.custom_models.LinearProbe",
            "--trainer.max_epochs", "5",
            "--model.lr", "0.2",
            "--run.logger", "none",
            "--checkpoint.monitor", "val/loss", "--checkpoint.mode", "min",
        ]
    )  # fmt: skip
    assert code == 0, capsys.readouterr().err
    (run_dir,) = (in_tmp / "runs" / "cnn_digits").iterdir()
    checkpoint = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert checkpoint["hyper_parameters"]["num_classes"] == 10  # linked from the data, not the default 3
    assert json.loads((run_dir / "summary.json").read_text())["test/acc"] > 0.8


def test_a_data_mistake_found_during_training_leaves_nothing_behind(in_tmp: Path, capsys) -> None:
    write_images(in_tmp / "data" / "train", {"a": 0, "b": 100}, count=4)
    for name in ("a", "b"):  # the test split exists but holds only files that are not images
        write(in_tmp / "data" / "test" / name / "0.png", "not a png")
    data = ["--data.dataset", "folder", "--data.data_dir", str(in_tmp / "data")]
    with pytest.warns(UserWarning, match="skipping unreadable image"):
        code = main(["--config", "cnn_digits", *data, "--model.net.channels", "[4]"])
    assert code == 2
    assert "error: no readable images in" in capsys.readouterr().err
    assert not any((in_tmp / "runs").rglob("*.*"))


def test_a_mistake_keeps_the_users_own_empty_run_root(in_tmp: Path, capsys) -> None:
    """A run stopped by a mistake found after its directory was made removes the folders it made, and only
    those: the user's own (empty) --run.root stays."""
    (in_tmp / "my-runs").mkdir()
    args = ["--config", "cnn_digits", "--run.root", "my-runs", "--trainer.val_check_interval", "100"]
    assert main(args) == 2
    assert "val_check_interval" in capsys.readouterr().err
    assert (in_tmp / "my-runs").is_dir() and not any((in_tmp / "my-runs").iterdir())


@pytest.mark.slow
def test_a_mistake_found_after_wandb_started_ends_on_its_error_not_on_a_sync_hint(tmp_path: Path) -> None:
    """Lightning finds the mistake once the W&B run has started; the run directory is removed, so W&B's footer
    (which would say `wandb sync <the removed folder>`) is not printed, and the error is the last line."""
    args = ["--config", "cnn_digits", "--trainer.val_check_interval", "100"]
    result = run_cli(*args, cwd=tmp_path, env={"WANDB_SILENT": "false"})  # (the tests keep W&B silent)
    assert result.returncode == 2, result.stderr[-3000:]
    assert "wandb sync" not in result.stderr and "Run data is saved locally" in result.stderr  # W&B had started
    assert result.stderr.splitlines()[-1].startswith("error: trainer: `val_check_interval` (100)")
    assert not (tmp_path / "runs").exists()


@pytest.mark.slow
def test_a_read_only_run_root_is_refused_before_anything_runs(tmp_path: Path) -> None:
    root = tmp_path / "read-only"
    root.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "ro", "tmpfs", str(root)]).returncode:
        pytest.skip("mounting a read-only filesystem needs root")
    try:
        result = run_cli("--config", "cnn_digits", "--run.root", str(root / "runs"), cwd=tmp_path)
    finally:
        subprocess.run(["umount", "-l", str(root)], check=False)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"error: --run.root {root / 'runs'}: cannot write in {root}; choose a folder you can write to"
    ]


def test_a_module_with_only_a_training_step_trains_and_skips_the_stages_it_lacks(in_tmp: Path, capsys) -> None:
    """Lightning's minimal LightningModule (training_step and configure_optimizers) by class path: trained,
    checkpointed, not validated or tested, each said in one line, and summary.json says which stages ran."""
    model = ["--model", "tests.custom_models.MinimalModule", "--trainer.max_epochs", "2", "--run.logger", "none"]
    assert main(["--config", "cnn_digits", *model]) == 0
    err = capsys.readouterr().err
    assert "no validation (MinimalModule defines no validation_step): checkpoints keep the latest weights" in err
    assert "not testing: MinimalModule defines no test_step" in err and "Traceback" not in err
    (run_dir,) = (in_tmp / "runs" / "cnn_digits").iterdir()
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["stages"] == ["fit"] and summary["best_checkpoint"].endswith("epoch=1-step=40.ckpt")
    assert torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 40
