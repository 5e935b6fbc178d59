"""The command line end to end on real digits data, read back from the run directory and the W&B files."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from experiments.run import main
from tests.helpers import REPO, logged_tables, run_cli, wandb_records, wandb_summary


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess[str], Path]:
    """The digits preset through the real command line, W&B offline, with a repeated tag: 5 of its 20 epochs
    (the full run's accuracy: `make quality`)."""
    cwd = tmp_path_factory.mktemp("digits")
    result = run_cli(
        "--config",
        "cnn_digits",
        "--trainer.max_epochs",
        "5",
        "--run.tags",
        "[ci, digits, ci]",
        "--norms.histogram_every_n_steps",
        "40",
        "--throughput.peak_tflops",
        "0.5",
        "--samples.max_overhead",
        "1",
        "--confusion.max_overhead",
        "1",  # media every epoch whatever the machine's speed (the budget itself: test_media_schedule_...)
        cwd=cwd,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (run_dir,) = (cwd / "runs" / "cnn_digits").iterdir()
    return result, run_dir


def run_here(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """`experiments.run` in this process (where the exit code and the printed lines are the point, not a fresh
    interpreter: test_bad_input.py runs the command from the shell): its code, stdout and stderr."""
    try:
        code = main(list(args))
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else 1
    out, err = capsys.readouterr()
    return code, out, err


def test_digits_run_reaches_high_accuracy_and_writes_its_summary(digits_run: Any) -> None:
    result, run_dir = digits_run
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["test/acc"] > 0.9  # chance is 0.1; a broken model or pipeline stays far below (0.98 here)
    assert summary["test/f1"] > 0.85 and summary["test/loss"] < 0.5
    assert summary["val/acc_best"] >= summary["val/acc"] - 1e-6
    assert summary["run_id"] == run_dir.name and summary["run_dir"] == str(run_dir)
    assert summary["wall_time_s"] > 0
    assert f"run dir: {run_dir}" in result.stdout
    assert "test/acc" in result.stdout and f"{summary['test/acc']:.4f}" in result.stdout
    assert "Traceback" not in result.stderr


def test_checkpoints_load_with_weights_only(digits_run: Any) -> None:
    _, run_dir = digits_run
    summary = json.loads((run_dir / "summary.json").read_text())
    best = Path(summary["best_checkpoint"])
    assert best.parent == run_dir / "checkpoints" and (run_dir / "checkpoints" / "last.ckpt").is_file()
    checkpoint = torch.load(best, weights_only=True, map_location="cpu")
    task = checkpoint["hyper_parameters"]
    assert task["lr"] == 0.003
    assert checkpoint["datamodule_hyper_parameters"]["dataset"] == "digits"


def test_the_data_facts_reach_the_task_and_its_core_but_not_the_saved_config(digits_run: Any) -> None:
    """The digits datamodule's facts (8x8 grey images, 10 classes) are given to the task and to the core
    wherever their __init__ takes them, over the defaults (28x28, 2 classes for the task); the checkpoint
    records them, so it rebuilds the same model. config.yaml leaves them out: the data decides them."""
    from modules.classification import ClassificationTask

    _, run_dir = digits_run
    last = run_dir / "checkpoints" / "last.ckpt"
    task = torch.load(last, weights_only=True, map_location="cpu")["hyper_parameters"]
    core = task["net"]
    assert core["class_path"] == "cores.cnn.CNNClassifier"
    assert tuple(core["init_args"]["image_shape"]) == (1, 8, 8) and core["init_args"]["num_classes"] == 10
    assert task["num_classes"] == 10 and "image_shape" not in task  # the task takes no image_shape
    assert core["init_args"]["dropout"] == 0.2 and core["init_args"]["channels"] == [32, 64]  # the preset's
    model = ClassificationTask.load_from_checkpoint(last, weights_only=True, map_location="cpu")
    assert model.net.classifier[-1].out_features == 10 and model.test_confusion.counts.shape == (10, 10)

    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    model_args = config["model"]["init_args"]
    for fact in ("image_shape", "num_classes"):
        assert fact not in model_args and fact not in model_args["net"]["init_args"], fact
    assert model_args["net"]["init_args"]["dropout"] == 0.2  # the core's own settings stay


@pytest.mark.parametrize(
    ("arguments", "named"),
    [
        (["--model.init_args.dropout", "0.3"], "--model.init_args.net.init_args.dropout"),
        (["--model.dropout", "0.3"], "--model.init_args.net.init_args.dropout"),
        (
            ["--model", "modules.image_classifier.ImageClassifier"],
            "--model modules.classification.ClassificationTask --model.net cores.cnn.CNNClassifier",
        ),
    ],
    ids=["old-key", "old-shorthand", "old-class-path"],
)
def test_settings_of_the_earlier_layout_name_their_new_place(
    arguments: list[str], named: str, in_tmp: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run_here(capsys, "--config", "cnn_digits", *arguments)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and named in lines[0], err
    assert "Traceback" not in err
    assert not (in_tmp / "runs").exists()  # nothing written under the run root


def test_a_setting_the_chosen_core_lacks_is_not_called_a_setting_of_the_earlier_layout(
    in_tmp: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The sentiment LSTM takes no `channels` (the CNN does): the line must not send the user to the key
    they already gave."""
    code, _, err = run_here(capsys, "--config", "lstm_sentiment", "--model.net.channels", "[8]")
    assert code == 2
    (line,) = err.strip().splitlines()
    assert "channels" in line and "--model.init_args.net.init_args.channels" not in line, line


def test_saved_config_reruns_as_a_new_run_of_the_same_experiment(digits_run: Any, tmp_path: Path) -> None:
    _, run_dir = digits_run
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert config["model"]["class_path"] == "modules.classification.ClassificationTask"
    assert config["model"]["init_args"]["net"]["class_path"] == "cores.cnn.CNNClassifier"
    assert config["data"]["init_args"]["dataset"] == "digits"
    assert config["run"]["experiment"] == "cnn_digits"
    assert "dirpath" not in config["checkpoint"]  # run-specific paths are not part of the config
    result = run_cli(
        "--config",
        str(run_dir / "config.yaml"),
        "--trainer.max_epochs",
        "1",
        "--run.logger",
        "none",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (rerun,) = (tmp_path / "runs" / "cnn_digits").iterdir()
    assert rerun.name != run_dir.name and (rerun / "summary.json").is_file()


def test_wandb_run_holds_nested_config_and_metrics_at_their_steps(digits_run: Any) -> None:
    _, run_dir = digits_run
    summary = json.loads((run_dir / "summary.json").read_text())
    wandb = wandb_summary(run_dir)
    assert wandb["state"] == "finished" and wandb["run_id"] == summary["run_id"]
    assert wandb["tags"] == ["ci", "digits"]  # repeated tags are given once
    assert (
        wandb["name"]
        == "cnn_digits max_epochs=5 histogram_every_n_steps=40 peak_tflops=0.5 max_overhead=1 max_overhead=1"
    )
    assert wandb["summary"]["val/acc_best"] == pytest.approx(summary["val/acc_best"])
    config = wandb["config"]
    assert config["model"]["init_args"]["lr"] == 0.003
    assert config["data"]["init_args"]["dataset"] == "digits"
    assert config["trainer"]["max_epochs"] == 5 and config["experiment"] == "cnn_digits"
    assert wandb["summary"]["test/acc"] == pytest.approx(summary["test/acc"])

    history = [r["history"]["item"] for r in wandb_records(run_dir) if r["type"] == "history"]
    steps_per_epoch = 1294 // 64  # digits train split at batch 64, last partial batch dropped
    # Lightning logs at the index of the last optimizer step taken: validation after epoch e at e*n - 1.
    val_steps = [item["trainer/global_step"] for item in history if "val/acc" in item]
    assert val_steps == [steps_per_epoch * epoch - 1 for epoch in range(1, 6)]
    train_steps = [item["trainer/global_step"] for item in history if "train/loss" in item]
    assert train_steps and all(step % 5 == 4 for step in train_steps)  # log_every_n_steps: 5
    (test,) = [item for item in history if "test/acc" in item]
    assert test["test/acc"] == pytest.approx(summary["test/acc"])


def test_run_names_show_what_differs_from_the_preset() -> None:
    from experiments.cli import derived_name

    args = ["--config", "x.yaml", "--model.init_args.lr", "0.01", "--trainer.max_epochs=5", "--run.tags", "[a]"]
    assert derived_name("cnn_digits", args) == "cnn_digits lr=0.01 max_epochs=5"
    core = ["--model.net.dropout", "0.3", "--model.init_args.net.init_args.hidden_dim=64"]
    assert derived_name("cnn_digits", core) == "cnn_digits dropout=0.3 hidden_dim=64"


def test_print_config_shows_overrides_and_writes_nothing(in_tmp: Path, capsys: pytest.CaptureFixture[str]) -> None:
    overrides = ["--model.init_args.lr", "0.05", "--model.net.channels", "[8]", "--data.batch_size", "32"]
    code, out, err = run_here(capsys, "--config", "cnn_digits", *overrides, "--print_config")
    assert code == 0, err
    config = yaml.safe_load(out)
    assert config["model"]["init_args"]["lr"] == 0.05 and config["data"]["init_args"]["batch_size"] == 32
    core = config["model"]["init_args"]["net"]
    assert core["class_path"] == "cores.cnn.CNNClassifier" and core["init_args"]["channels"] == [8]
    assert core["init_args"]["hidden_dim"] == 128  # the preset's other core settings stay
    assert not (in_tmp / "runs").exists()


@pytest.mark.slow
def test_default_experiment_is_fashion_mnist(tmp_path: Path) -> None:
    result = run_cli("--print_config", cwd=tmp_path)
    config = yaml.safe_load(result.stdout)
    assert config["data"]["init_args"]["dataset"] == "fashion_mnist"
    assert config["model"]["class_path"] == "modules.classification.ClassificationTask"
    assert config["model"]["init_args"]["net"]["class_path"] == "cores.cnn.CNNClassifier"


def test_help_lists_model_data_trainer_and_run_options(tmp_path: Path) -> None:
    result = run_cli("--help", cwd=tmp_path)
    assert result.returncode == 0
    for option in (
        "--model",
        "--data",
        "--trainer.max_epochs",
        "--checkpoint.monitor",
        "--run.logger",
        "--run.tags",
    ):
        assert option in result.stdout


def test_provenance_is_saved_and_logged_as_an_artifact(digits_run: Any) -> None:
    _, run_dir = digits_run
    provenance = json.loads((run_dir / "provenance.json").read_text())
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()
    assert provenance["code"]["commit"] == head
    dirty = bool(subprocess.run(["git", "status", "--porcelain"], cwd=REPO, capture_output=True, text=True).stdout)
    assert provenance["code"]["dirty"] == dirty
    assert (run_dir / "code.diff").is_file() == bool(
        subprocess.run(["git", "diff", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout
        or provenance["code"]["untracked_imported"]
    )
    assert provenance["environment"]["packages"]["torch"] == torch.__version__.split("+")[0]
    records = wandb_records(run_dir)
    (artifact,) = [r["artifact"] for r in records if r["type"] == "artifact" and r["artifact"]["type"] == "provenance"]
    files = {entry["path"] for entry in artifact["manifest"]["contents"]}
    assert {"provenance.json", "config.yaml"} <= files
    assert wandb_summary(run_dir)["config"]["code"]["commit"] == head


def test_checkpoints_are_model_artifacts_with_best_and_latest_aliases(digits_run: Any) -> None:
    _, run_dir = digits_run
    summary = json.loads((run_dir / "summary.json").read_text())
    models = [
        r["artifact"] for r in wandb_records(run_dir) if r["type"] == "artifact" and r["artifact"]["type"] == "model"
    ]
    by_file = {json.loads(a["metadata"])["original_filename"]: a for a in models}
    best = by_file[Path(summary["best_checkpoint"]).name]
    assert "best" in best["aliases"]
    assert "latest" in models[-1]["aliases"] and json.loads(models[-1]["metadata"])["original_filename"] == "last.ckpt"


def test_sample_predictions_and_confusion_matrix_are_logged(digits_run: Any) -> None:
    _, run_dir = digits_run
    samples = logged_tables(run_dir, "val/samples")
    assert len(samples) == 5  # one per validation epoch: --samples.max_overhead 1 lifts the time budget
    assert samples[-1]["columns"] == ["input", "true", "predicted", "confidence"] and len(samples[-1]["data"]) == 8
    assert all(0 < row[3] <= 1 for row in samples[-1]["data"])
    (files,) = (run_dir / "wandb").glob("offline-run-*/files")
    assert len(list(files.glob("media/images/val/sample_images_*.png"))) == 5 * 8
    confusion = logged_tables(run_dir, "val/confusion_matrix_table")
    history = [r["history"]["item"] for r in wandb_records(run_dir) if r["type"] == "history"]
    steps = [item["trainer/global_step"] for item in history if "val/confusion_matrix_table.path" in item]
    assert len(confusion) == 5 and steps == list(range(20, 101, 20))  # after every epoch
    assert confusion[-1]["columns"] == ["Actual", "Predicted", "nPredictions"]
    assert sum(row[2] for row in confusion[-1]["data"]) == 144  # every validation digit counted once
    correct = sum(row[2] for row in confusion[-1]["data"] if row[0] == row[1])
    summary = wandb_summary(run_dir)["summary"]
    assert correct / 144 == pytest.approx(summary["val/acc"], abs=1e-6)


def test_parameter_norms_and_histograms_are_logged(digits_run: Any) -> None:
    _, run_dir = digits_run
    history = [r["history"]["item"] for r in wandb_records(run_dir) if r["type"] == "history"]
    norms = [item for item in history if "grad_norm/total" in item]
    assert [item["trainer/global_step"] for item in norms] == [49, 99]  # 100 steps, every 50
    layers = [key for key in norms[0] if key.startswith("grad_norm/net.")]
    # Every trainable parameter: 4 convolutions (no bias before batch norm), 4 batch norms, 2 linear layers.
    assert "grad_norm/net.classifier.5.weight" in layers and len(layers) == 4 + 4 * 2 + 2 * 2
    total = sum(norms[0][key] ** 2 for key in layers) ** 0.5
    assert norms[0]["grad_norm/total"] == pytest.approx(total, rel=1e-6) and total > 0
    histograms = [item for item in history if "weights/net.classifier.5.weight._type" in item]
    assert [item["trainer/global_step"] for item in histograms] == [39, 79]  # every 40
    assert histograms[0]["weights/net.classifier.5.weight._type"] == "histogram"


def test_throughput_is_logged_per_interval(digits_run: Any) -> None:
    _, run_dir = digits_run
    history = [r["history"]["item"] for r in wandb_records(run_dir) if r["type"] == "history"]
    rates = [item for item in history if "throughput/samples_per_s" in item]
    assert rates and all(item["throughput/samples_per_s"] > 0 for item in rates)
    summary = json.loads((run_dir / "summary.json").read_text())
    # No interval is faster than the whole run's average allows by orders of magnitude.
    assert max(item["throughput/samples_per_s"] for item in rates) < 1294 * 5 / summary["wall_time_s"] * 50


def test_flops_are_counted_exactly_and_give_the_utilisation(digits_run: Any) -> None:
    """The digits CNN (1x8x8 input, convs 1-32-32 at 8x8 and 32-64-64 at 4x4, 3x3 kernels; 256-128-10 head):
    forward 3,054,080 multiply-adds x 2; backward twice that, less the input gradient of the first conv."""
    _, run_dir = digits_run
    conv = 2 * 9 * (1 * 32 * 64 + 32 * 32 * 64 + 32 * 64 * 16 + 64 * 64 * 16)
    forward = conv + 2 * (256 * 128 + 128 * 10)
    expected = 3 * forward - 2 * 9 * 1 * 32 * 64
    history = [r["history"]["item"] for r in wandb_records(run_dir) if r["type"] == "history"]
    rates = [item for item in history if "throughput/samples_per_s" in item]
    for item in rates:
        assert item["throughput/tflops_per_s"] * 1e12 == pytest.approx(expected * item["throughput/samples_per_s"])
        assert item["throughput/mfu"] == pytest.approx(item["throughput/tflops_per_s"] / 0.5)  # --peak_tflops 0.5
    assert wandb_summary(run_dir)["summary"]["throughput/flops_per_sample"] == expected


def test_peak_flops_are_known_for_gpus_only() -> None:
    from callbacks.throughput import peak_flops

    assert peak_flops(torch.device("cpu"), torch.bfloat16) is None  # no MFU on CPUs unless given


def test_tokens_are_counted_without_padding() -> None:
    from callbacks.throughput import count_tokens

    tokens = torch.tensor([[5, 6, 0], [7, 0, 0]])
    assert int(count_tokens(tokens, pad_id=0)) == 3
    assert int(count_tokens(tokens, pad_id=6)) == 5  # the task's padding id, whatever it is
    assert int(count_tokens(tokens)) == 6  # a task without padding: every token counts
    assert count_tokens(torch.zeros(2, 1, 8, 8)) == 0  # images have no tokens


def test_media_schedule_keeps_to_its_time_budget() -> None:
    """Epochs of 1 s and media costing 0.1 s each: a 5% budget allows one log every other epoch."""
    from callbacks.wandb_media import MediaSchedule

    schedule = MediaSchedule(every_n_epochs=1, max_overhead=0.05)
    schedule.start()
    trainer = fake_trainer(max_epochs=40, max_steps=-1, batches=10, val_every=None)
    logged = []
    for epoch in range(40):
        trainer.current_epoch = epoch
        trainer.global_step = 10 * (epoch + 1)
        schedule.started -= 1.0  # one more second of training has passed
        if schedule.due(trainer):  # type: ignore[arg-type]
            logged.append(epoch)
            schedule.spent += 0.1
            schedule.last_cost = 0.1
    assert logged[0] == 0 and logged[-1] == 39  # the first and the final epoch always log
    assert 0.1 * (len(logged) - 1) <= 0.05 * 40 + 0.1  # within budget, the forced final log aside
    assert 18 <= len(logged) <= 22


def fake_trainer(max_epochs: int, max_steps: int, batches: int, val_every: int | None) -> Any:
    """What `MediaSchedule` reads of a trainer, validating at every epoch's end or every `val_every` steps."""
    from types import SimpleNamespace

    progress = SimpleNamespace(current=SimpleNamespace(processed=batches))
    return SimpleNamespace(
        sanity_checking=False,
        max_epochs=max_epochs,
        max_steps=max_steps,
        global_step=0,
        current_epoch=0,
        num_training_batches=batches,
        check_val_every_n_epoch=1 if val_every is None else None,
        val_check_batch=val_every or batches,
        fit_loop=SimpleNamespace(epoch_loop=SimpleNamespace(batch_progress=progress)),
        strategy=None,
        callbacks=[],
    )


def test_media_of_a_run_in_one_long_epoch_are_final_only_at_its_last_validation() -> None:
    """A language model validating every 250 of 2,000 steps in an epoch of 17,000 batches: media costing
    far more than the budget log at the first and the last validation only, not at every one."""
    from callbacks.wandb_media import MediaSchedule

    schedule = MediaSchedule(every_n_epochs=1, max_overhead=0.005)
    schedule.start()
    trainer = fake_trainer(max_epochs=-1, max_steps=2000, batches=17_000, val_every=250)
    logged = []
    for step in range(250, 2001, 250):
        trainer.global_step = step
        trainer.fit_loop.epoch_loop.batch_progress.current.processed = step
        schedule.started -= 10.0  # ten seconds of training per 250 steps
        if schedule.due(trainer):  # type: ignore[arg-type]
            logged.append(step)
            schedule.spent += 1.0
            schedule.last_cost = 1.0
    assert logged == [250, 2000]


def test_media_of_a_run_under_max_time_log_at_the_validation_before_the_time_runs_out() -> None:
    """A run stopped by `max_time` cannot know its last step; its last validation is the one after which
    less time remains than the last interval between validations took (95 s of budget, one per 10 s)."""
    from lightning.pytorch.callbacks import Timer

    from callbacks.wandb_media import MediaSchedule

    class ClockTimer(Timer):  # a Timer whose remaining time follows the test's clock
        remaining = 95.0

        def time_remaining(self, stage: object = None) -> float:
            return self.remaining

    schedule = MediaSchedule(every_n_epochs=1, max_overhead=0.005)
    schedule.start()
    trainer = fake_trainer(max_epochs=-1, max_steps=60_000, batches=17_000, val_every=250)
    timer = ClockTimer(duration="00:00:01:35")
    trainer.callbacks = [timer]
    logged = []
    for step in range(250, 2251, 250):  # the Timer stops the run before the next one
        trainer.global_step = step
        trainer.fit_loop.epoch_loop.batch_progress.current.processed = step
        schedule.started -= 10.0  # ten seconds of training per 250 steps
        timer.remaining -= 10.0
        if schedule.due(trainer):  # type: ignore[arg-type]
            logged.append(step)
            schedule.spent += 1.0
            schedule.last_cost = 1.0
    assert logged == [250, 2250]  # 5 s remain after 2,250 steps: no validation comes after it


def test_untracked_files_the_run_imported_are_in_its_code_diff(tmp_path: Path, monkeypatch) -> None:
    """A model file not yet added to git, imported by the run, is named in provenance and in code.diff as a
    new file: `git apply code.diff` on the commit recreates it. Untracked files not imported stay out."""
    import importlib.util

    import callbacks.provenance as provenance

    repo = tmp_path / "repo"
    repo.mkdir()
    for command in (["init", "-q"], ["commit", "-q", "--allow-empty", "-m", "start"]):
        subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *command], cwd=repo, check=True)
    (repo / "my_model.py").write_text("WIDTH = 7\n")
    (repo / "notes.txt").write_text("not imported\n")
    spec = importlib.util.spec_from_file_location("my_model", repo / "my_model.py")
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    monkeypatch.setitem(sys.modules, "my_model", module)
    monkeypatch.setattr(provenance, "REPOSITORY", repo)

    code, diff = provenance.code_version()
    assert code["untracked_imported"] == ["my_model.py"] and code["dirty"]
    assert "+WIDTH = 7" in diff and "notes" not in diff
    clean = tmp_path / "clean"
    subprocess.run(["git", "clone", "-q", str(repo), str(clean)], check=True)
    (tmp_path / "code.diff").write_text(diff)
    subprocess.run(["git", "apply", str(tmp_path / "code.diff")], cwd=clean, check=True)
    assert (clean / "my_model.py").read_text() == "WIDTH = 7\n"
