"""Faults that stop a run: each ends it in one clear line, keeps what was saved, and corrupts nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tests import forked
from tests.filesystems import small_filesystem
from tests.helpers import HANG_GUARD_S, fresh_env, run_cli, wandb_records, wandb_summary
from tests.signals import fill

DIGITS = ["--config", "cnn_digits", "--trainer.max_epochs", "3"]  # 20 steps per epoch


def only_run(root: Path) -> Path:
    (run_dir,) = (root / "cnn_digits").iterdir()
    return run_dir


@pytest.mark.slow
def test_a_non_finite_loss_stops_the_run_at_that_step(tmp_path: Path) -> None:
    poison = ["--trainer.callbacks+=tests.signals.PoisonAt", "--trainer.callbacks.step=25"]
    result = run_cli(*DIGITS, *poison, cwd=tmp_path)
    assert result.returncode == 1, result.stderr[-3000:]
    run_dir = only_run(tmp_path / "runs")
    last = run_dir / "checkpoints" / "last.ckpt"
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert lines == [
        f"error: the training loss became nan at step 25 (epoch 2); the last good checkpoint is {last} (step 20). "
        "Lower the learning rate (--model.init_args.lr) or clip gradients (--trainer.gradient_clip_val 1.0)"
    ]
    assert "Traceback" not in result.stderr
    state = torch.load(last, weights_only=True)
    assert state["global_step"] == 20 and all(t.isfinite().all() for t in state["state_dict"].values())
    assert not (run_dir / "summary.json").exists()
    assert wandb_summary(run_dir)["state"] == "failed"


def test_a_deferred_check_stops_before_a_checkpoint_is_saved() -> None:
    """On accelerators the check is read without waiting; a checkpoint save waits for it first."""
    from types import SimpleNamespace

    from callbacks.finite_loss import FiniteLoss, NonFiniteLoss

    check = FiniteLoss(deferred=True)
    trainer = SimpleNamespace(world_size=1, global_step=7, current_epoch=1)
    check.on_before_backward(trainer, None, torch.tensor(0.5))  # type: ignore[arg-type]
    with pytest.raises(NonFiniteLoss, match=r"became inf at step 7 \(epoch 2\)"):
        check.on_before_backward(trainer, None, torch.tensor(float("inf")))  # type: ignore[arg-type]


@pytest.mark.slow
def test_a_full_disk_during_a_checkpoint_save_keeps_the_previous_one(tmp_path: Path) -> None:
    """The disk fills up at step 25; the save at the end of epoch 2 (step 40) fails: one line, exit 1, and
    last.ckpt of step 20 intact, without temporary files. On a real small filesystem where it can be
    mounted (root, as in CI), else with the write error injected."""
    with small_filesystem(tmp_path / "small", 32) as mounted:
        fill = "FillDiskAt" if mounted else "FailWritesAt"
        args = [*DIGITS, "--run.root", str(tmp_path / "small" / "runs"), "--trainer.log_every_n_steps", "20"]
        fault = [f"--trainer.callbacks+=tests.signals.{fill}", "--trainer.callbacks.step=25"]
        result = run_cli(*args, *fault, cwd=tmp_path)
        assert result.returncode == 1, result.stderr[-3000:]
        run_dir = only_run(tmp_path / "small" / "runs")
        checkpoints = run_dir / "checkpoints"
        errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and "Traceback" not in result.stderr, result.stderr[-3000:]
        assert "Logging error" not in result.stderr, result.stderr[-3000:]  # W&B's log file on the full disk
        assert result.stderr.splitlines()[-1] == errors[0]  # the last line, after W&B's footer
        assert errors[0].startswith(f"error: could not write checkpoint {checkpoints}/"), errors
        assert "No space left on device; free some space, or keep runs on another disk with --run.root" in errors[0]
        assert errors[0].endswith(f"the last good checkpoint is {checkpoints / 'last.ckpt'} (step 20)"), errors
        assert torch.load(checkpoints / "last.ckpt", weights_only=True)["global_step"] == 20
        assert not list(checkpoints.glob(".*.tmp"))


@pytest.mark.slow
def test_a_disk_filled_to_the_last_byte_ends_in_one_line_without_wandbs_logging_errors(tmp_path: Path) -> None:
    """Every write fails from step 25 on, W&B's own log file too (each of its records a logging traceback,
    hundreds of lines, unless firstlight keeps them quiet): the error is one line, the last of stderr, and
    the last checkpoint is intact."""
    with small_filesystem(tmp_path / "small", 32) as mounted:
        if not mounted:
            pytest.skip("needs a small filesystem (root)")
        args = [*DIGITS, "--run.root", str(tmp_path / "small" / "runs"), "--trainer.log_every_n_steps", "20"]
        fault = ["--trainer.callbacks+=tests.signals.FillDiskAt", "--trainer.callbacks.step=25"]
        result = run_cli(*args, *fault, "--trainer.callbacks.leave_kib=0", cwd=tmp_path)
        assert result.returncode == 1, result.stderr[-3000:]
        errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and "Traceback" not in result.stderr, result.stderr[-3000:]
        assert "Logging error" not in result.stderr, result.stderr[-3000:]
        assert result.stderr.splitlines()[-1] == errors[0] and "No space left on device" in errors[0]
        last = only_run(tmp_path / "small" / "runs") / "checkpoints" / "last.ckpt"
        assert errors[0].endswith(f"the last good checkpoint is {last} (step 20)")
        assert torch.load(last, weights_only=True)["global_step"] == 20


@pytest.mark.slow
def test_a_disk_full_from_the_start_stops_in_one_line_and_leaves_nothing(tmp_path: Path) -> None:
    with small_filesystem(tmp_path / "small", 4) as mounted:
        if not mounted:
            pytest.skip("needs a small filesystem (root)")
        fill(tmp_path / "small", leave=0)
        result = run_cli(*DIGITS, "--run.root", str(tmp_path / "small" / "runs"), cwd=tmp_path)
        assert result.returncode == 1, result.stderr[-3000:]
        errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and "Traceback" not in result.stderr, result.stderr[-3000:]
        assert "No space left on device; free some space, or keep runs on another disk with --run.root" in errors[0]
        assert sorted(p.name for p in (tmp_path / "small").iterdir()) == ["ballast"]  # no run left behind


@pytest.mark.slow
def test_a_disk_filling_up_before_the_summary_keeps_the_test_metrics_and_the_run_resumable(tmp_path: Path) -> None:
    with small_filesystem(tmp_path / "small", 32) as mounted:
        if not mounted:
            pytest.skip("needs a small filesystem (root)")
        root = tmp_path / "small" / "runs"
        fault = ["--trainer.callbacks+=tests.signals.FillDiskAfterTesting"]
        result = run_cli(*DIGITS, "--trainer.max_epochs", "1", "--run.root", str(root), *fault, cwd=tmp_path)
        assert result.returncode == 1, result.stderr[-3000:]
        run_dir = only_run(root)
        errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and "Traceback" not in result.stderr, result.stderr[-3000:]
        assert "No space left on device" in errors[0] and "no summary written" in errors[0]
        assert errors[0].endswith(f"resume it with: python -m experiments.run --run.resume {run_dir}")
        assert "test/acc" in result.stdout  # the test metrics are not lost
        assert not (run_dir / "summary.json").exists()
        (run_dir / "ballast").unlink()  # space again: the resume tests the run and finishes it
        resumed = run_cli("--run.resume", str(run_dir), "--run.root", str(root), cwd=tmp_path)
        assert resumed.returncode == 0, resumed.stderr[-3000:]
        assert json.loads((run_dir / "summary.json").read_text())["test/acc"] > 0.5


@pytest.mark.slow
def test_ctrl_c_saves_and_stops_cleanly_then_resumes(tmp_path: Path) -> None:
    stop = ["--trainer.callbacks+=tests.signals.SignalAt", "--trainer.callbacks.step=25"]
    result = run_cli(*DIGITS, *stop, "--trainer.callbacks.signal_name=SIGINT", cwd=tmp_path)
    assert result.returncode == 130, result.stderr[-3000:]
    run_dir = only_run(tmp_path / "runs")
    step = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["global_step"]
    assert step in (25, 26) and f"interrupted: SIGINT at step {step}; saved" in result.stderr
    assert "Traceback" not in result.stderr and "KeyboardInterrupt" not in result.stderr
    records = wandb_records(run_dir)
    assert [r["type"] for r in records].count("preempting") == 1  # W&B shows it as preempted: resumable
    resumed = run_cli("--run.resume", str(run_dir), cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert json.loads((run_dir / "summary.json").read_text())["test/acc"] > 0.8


@pytest.mark.slow
@pytest.mark.parametrize(
    ("signal_name", "code", "what"), [("SIGTERM", 143, "preempted"), ("SIGINT", 130, "interrupted")]
)
def test_a_signal_during_set_up_exits_with_its_code_and_leaves_nothing(
    signal_name: str, code: int, what: str, tmp_path: Path
) -> None:
    data = ["--data", "tests.custom_models.SignalledDigits", f"--data.signal_name={signal_name}"]
    result = run_cli("--config", "cnn_digits", *data, cwd=tmp_path)
    assert result.returncode == code, result.stderr[-3000:]
    assert result.stderr.strip().splitlines()[-1] == f"{what}: {signal_name} before training started; nothing was saved"
    assert "Traceback" not in result.stderr and not (tmp_path / "runs").exists()


@pytest.mark.slow
@pytest.mark.parametrize(
    ("when", "signal_name", "code"),
    [("test", "SIGTERM", 143), ("sanity", "SIGTERM", 143), ("test", "SIGINT", 130), ("sanity", "SIGINT", 130)],
)
def test_a_signal_outside_the_training_loop_is_no_success(
    when: str, signal_name: str, code: int, tmp_path: Path
) -> None:
    """SIGTERM or Ctrl-C during the sanity check or the test of the best checkpoint, where Lightning's own
    handling is active: the run ends with 143 or 130 (not 0 or 1), one line, no summary, and resumes."""
    stop = ["--trainer.callbacks+=tests.signals.SignalOutsideTraining", f"--trainer.callbacks.when={when}"]
    args = [*DIGITS, "--trainer.max_epochs=1", *stop, f"--trainer.callbacks.signal_name={signal_name}"]
    result = run_cli(*args, cwd=tmp_path)
    assert result.returncode == code, result.stderr[-3000:]
    run_dir = only_run(tmp_path / "runs")
    what = "preempted: SIGTERM" if signal_name == "SIGTERM" else "interrupted: SIGINT"
    if when == "test":
        assert f"{what} while testing; no summary written; resume it with: " in result.stderr
    else:  # stopped before the first checkpoint: the line gives a command that works, not a resume that fails
        again = f"run it again with: python -m experiments.run --config {run_dir / 'config.yaml'}"
        line = f"{what} outside the training loop, before the first checkpoint; nothing to resume; {again}"
        assert result.stderr.strip().splitlines()[-1] == line and (run_dir / "config.yaml").is_file()
    assert "Traceback" not in result.stderr and not (run_dir / "summary.json").exists()
    if when == "test":  # trained: resuming tests the best checkpoint and finishes the run
        resumed = run_cli("--run.resume", str(run_dir), cwd=tmp_path)
        assert resumed.returncode == 0, resumed.stderr[-3000:]
        assert json.loads((run_dir / "summary.json").read_text())["test/acc"] > 0.5


@pytest.mark.slow
def test_a_second_ctrl_c_stops_at_once_with_130_and_resumes_from_the_last_save(tmp_path: Path) -> None:
    """Two Ctrl-C at step 25: the second stops before anything is saved (Lightning turns it into exit 1);
    the run ends with 130 and one line, and resumes from the end of epoch 1."""
    stop = ["--trainer.callbacks+=tests.signals.SignalAt", "--trainer.callbacks.step=25"]
    stop += ["--trainer.callbacks.signal_name=SIGINT", "--trainer.callbacks.times=2"]
    result = run_cli(*DIGITS, *stop, cwd=tmp_path)
    assert result.returncode == 130, result.stderr[-3000:]
    assert "interrupted: SIGINT again in training, before saving; no summary written; resume it" in result.stderr
    assert "Traceback" not in result.stderr
    run_dir = only_run(tmp_path / "runs")
    assert torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 20


@pytest.mark.slow
def test_a_history_line_cut_short_by_a_crash_does_not_stop_resume_or_compare(tmp_path: Path) -> None:
    """A run preempted, then its history.jsonl's last append cut short (as a kill or a full disk during the
    write leaves it): resuming drops that partial record and finishes; compare reads the run. A damaged line
    elsewhere is named in one line."""
    from callbacks.history import read_history
    from experiments.compare import main as compare
    from validation import ConfigError

    stop = ["--trainer.callbacks+=tests.signals.SignalAt", "--trainer.callbacks.step=25"]
    result = run_cli(*DIGITS, "--trainer.max_epochs=2", *stop, "--trainer.log_every_n_steps=5", cwd=tmp_path)
    assert result.returncode == 143, result.stderr[-3000:]
    run_dir = only_run(tmp_path / "runs")
    history = run_dir / "history.jsonl"
    complete = read_history(run_dir)
    with history.open("a") as file:
        file.write('{"step": 26, "train/lo')  # no newline: the write stopped here
    assert read_history(run_dir) == complete
    resumed = run_cli("--run.resume", str(run_dir), cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    lines = history.read_text().splitlines()
    assert all(json.loads(line)["step"] >= 0 for line in lines)  # every line whole again
    assert compare([str(run_dir), "--output", str(tmp_path / "c.png")]) == 0

    history.write_text('{"step": 1}\n{"step": 2, "x\n{"step": 3}\n')
    with pytest.raises(ConfigError, match=r"history.jsonl line 2 is damaged \(not JSON\); delete that line"):
        read_history(run_dir)


@pytest.mark.slow
def test_runs_started_together_get_their_own_directories(tmp_path: Path) -> None:
    arguments = ["--config", "cnn_digits", "--trainer.max_epochs", "1"]
    for run in forked.run_together("experiments.run", [arguments] * 3, tmp_path, fresh_env(), HANG_GUARD_S):
        assert run.returncode == 0, run.stderr[-3000:]
    run_dirs = list((tmp_path / "runs" / "cnn_digits").iterdir())
    assert len(run_dirs) == 3
    for run_dir in run_dirs:  # each complete, its own W&B run
        summary = json.loads((run_dir / "summary.json").read_text())
        assert summary["run_dir"] == str(run_dir) and summary["test/acc"] > 0.5
        assert len(list((run_dir / "wandb").glob("offline-run-*"))) == 1
