"""Resume and preemption: exact kill-and-resume, safe checkpoint files, finding the run to resume."""

from __future__ import annotations

import json
import pickle
import random
import subprocess
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from callbacks.checkpointing import AtomicCheckpointIO, random_states, resume_checkpoint, set_random_states
from datamodules.batches import IndexBatches, ShardedOrder
from experiments.resume import choose_run
from experiments.run import main
from experiments.rundir import cluster_run_id, run_lock, unfinished_runs
from tests.helpers import final_state, history, run_cli

DIGITS = ["--config", "cnn_digits", "--trainer.max_epochs", "3"]


def test_a_failed_save_leaves_the_previous_checkpoint_intact(tmp_path: Path) -> None:
    io, path = AtomicCheckpointIO(), tmp_path / "checkpoints" / "last.ckpt"
    io.save_checkpoint({"global_step": 1, "weights": torch.ones(3)}, path)
    with pytest.raises((pickle.PicklingError, AttributeError, TypeError)):
        io.save_checkpoint({"global_step": 2, "broken": lambda: None}, path)  # fails half-way through
    assert torch.load(path, weights_only=True)["global_step"] == 1
    assert [p.name for p in path.parent.iterdir()] == ["last.ckpt"]  # no temporary file left behind


def test_resume_skips_a_truncated_checkpoint_with_a_warning(tmp_path: Path) -> None:
    folder = tmp_path / "run" / "checkpoints"
    io = AtomicCheckpointIO()
    io.save_checkpoint({"global_step": 20, "weights": torch.randn(1000)}, folder / "epoch=0-step=20.ckpt")
    io.save_checkpoint({"global_step": 40, "weights": torch.randn(1000)}, folder / "last.ckpt")
    assert resume_checkpoint(tmp_path / "run") == folder / "last.ckpt"
    data = (folder / "last.ckpt").read_bytes()
    (folder / "last.ckpt").write_bytes(data[: len(data) // 2])  # a save killed half-way, without our IO
    with pytest.warns(UserWarning, match=r"skipping checkpoint .*last\.ckpt: it does not load"):
        assert resume_checkpoint(tmp_path / "run") == folder / "epoch=0-step=20.ckpt"


def test_random_states_round_trip_through_a_weights_only_checkpoint(tmp_path: Path) -> None:
    torch.manual_seed(1), np.random.seed(1), random.seed(1)
    torch.save({"states": random_states()}, tmp_path / "s.ckpt")
    expected = (torch.rand(3), np.random.rand(3), random.random())
    torch.manual_seed(2), np.random.seed(2), random.seed(2)
    set_random_states(torch.load(tmp_path / "s.ckpt", weights_only=True)["states"])
    again = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(expected[0], again[0]) and np.array_equal(expected[1], again[1]) and expected[2] == again[2]


def test_a_resumed_loader_skips_the_batches_already_trained() -> None:
    order = ShardedOrder(50, shuffle=True, seed=3)
    loader = IndexBatches(lambda indices: indices, 10, order)
    order.set_epoch(4)
    full = list(loader)
    loader.progress = lambda: 2
    state = loader.state_dict()
    assert state == {"epoch": 4, "batches_done": 2}
    resumed = IndexBatches(lambda indices: indices, 10, ShardedOrder(50, shuffle=True, seed=3))
    resumed.load_state_dict(state)
    resumed.sampler.set_epoch(4)
    assert [b.tolist() for b in resumed] == [b.tolist() for b in full[2:]]
    assert len(list(resumed)) == 5  # only the resumed epoch is shortened


def make_run(root: Path, name: str, *, finished: bool, checkpoint: bool = True) -> Path:
    run_dir = root / "cnn_digits" / name
    (run_dir / "checkpoints").mkdir(parents=True)
    (run_dir / "config.yaml").write_text("seed_everything: 0\n")
    if checkpoint:
        torch.save({"global_step": 5}, run_dir / "checkpoints" / "last.ckpt")
    if finished:
        (run_dir / "summary.json").write_text("{}")
    return run_dir


def test_auto_resume_picks_the_newest_unfinished_run_that_nobody_trains(tmp_path: Path) -> None:
    older = make_run(tmp_path, "20261129-100000-aaaaaa", finished=False)
    newer = make_run(tmp_path, "20261129-110000-bbbbbb", finished=False)
    make_run(tmp_path, "20261129-120000-cccccc", finished=True)
    make_run(tmp_path, "20261129-130000-dddddd", finished=False, checkpoint=False)
    assert unfinished_runs(tmp_path / "cnn_digits") == [newer, older]
    with run_lock(newer):  # being trained by another process
        assert unfinished_runs(tmp_path / "cnn_digits") == [older]


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"SLURM_JOB_ID": "812", "SLURM_JOB_NAME": "train"}, "slurm-812"),
        ({"SLURM_JOB_ID": "812", "SLURM_JOB_NAME": "bash"}, None),  # an interactive allocation: no identity
        ({"SLURM_ARRAY_JOB_ID": "9", "SLURM_ARRAY_TASK_ID": "3", "SLURM_JOB_ID": "12"}, "slurm-9_3"),
        ({"TORCHELASTIC_RUN_ID": "exp7"}, "torchrun-exp7"),
        ({"TORCHELASTIC_RUN_ID": "none"}, None),
        ({}, None),
    ],
)
def test_cluster_jobs_give_the_run_id(env: dict[str, str], expected: str | None, monkeypatch) -> None:
    for name in ("SLURM_JOB_ID", "SLURM_JOB_NAME", "SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID", "TORCHELASTIC_RUN_ID"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert cluster_run_id() == expected


def test_two_commands_of_one_cluster_job_train_two_runs_each_resumed_by_its_own(tmp_path: Path, monkeypatch) -> None:
    for name in ("SLURM_ARRAY_JOB_ID", "FIRSTLIGHT_RUN_ID", "FIRSTLIGHT_RUN_DIR", "FIRSTLIGHT_RESUME_FROM"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SLURM_JOB_ID", "812")
    monkeypatch.setenv("SLURM_JOB_NAME", "train")
    options = SimpleNamespace(root=str(tmp_path), resume=None)
    first, resume_from = choose_run(options, "cnn_digits", ["--model.lr", "0.1"])
    second, _ = choose_run(options, "cnn_digits", ["--model.lr", "0.2"])
    assert first != second and first.name.startswith("slurm-812-") and resume_from is None
    make_run(tmp_path, first.name, finished=False)  # the first command's run, stopped: the job is requeued
    assert choose_run(options, "cnn_digits", ["--model.lr", "0.1"]) == (first, first / "checkpoints" / "last.ckpt")
    assert choose_run(options, "cnn_digits", ["--model.lr", "0.2"]) == (second, None)


@pytest.mark.parametrize(
    ("resume", "message"),
    [
        ("nope", "run nope not found among the runs in"),
        ("FINISHED", "has finished; nothing to resume"),
        ("EMPTY", "has no checkpoint that loads; nothing to resume"),
        ("NO_CONFIG", "has no config.yaml, which a run directory keeps its settings in; restore it"),
    ],
)
def test_resume_mistakes(resume: str, message: str, tmp_path: Path, capsys) -> None:
    runs = {
        "FINISHED": make_run(tmp_path, "20261129-100000-aaaaaa", finished=True),
        "EMPTY": make_run(tmp_path, "20261129-110000-bbbbbb", finished=False, checkpoint=False),
        "NO_CONFIG": make_run(tmp_path, "20261129-120000-cccccc", finished=False),
    }
    (runs["NO_CONFIG"] / "config.yaml").unlink()  # deleted by hand: its checkpoints are there
    target = str(runs[resume]) if resume in runs else resume
    assert main([*DIGITS, "--run.root", str(tmp_path), "--run.resume", target]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert sorted(p.name for p in (tmp_path / "cnn_digits").iterdir()) == sorted(p.name for p in runs.values())


def wandb_train_steps(run_dir: Path) -> list[list[int]]:
    """trainer/global_step of every train/loss record, per W&B offline run directory (one per process)."""
    segments = []
    for offline in sorted((run_dir / "wandb").glob("offline-run-*")):
        output = subprocess.run(
            ["wandb", "leet", "inspect", "--json", str(offline)], capture_output=True, text=True, check=True
        ).stdout
        records = [json.loads(line) for line in output.splitlines() if line.strip()]
        items = [r["history"]["item"] for r in records if r["type"] == "history"]
        segments.append([int(i["trainer/global_step"]) for i in items if "train/loss" in i])
    return segments


def test_auto_resume_of_a_run_whose_checkpoints_are_all_corrupt_fails_and_touches_nothing(
    tmp_path: Path, capsys
) -> None:
    run_dir = make_run(tmp_path, "20261129-100000-aaaaaa", finished=False)
    (run_dir / "checkpoints" / "last.ckpt").write_bytes(b"PK\x03\x04 cut short")
    before = files_of(tmp_path)
    assert main([*DIGITS, "--run.root", str(tmp_path), "--run.resume", "auto"]) == 2
    err = capsys.readouterr().err
    assert f"the newest unfinished run {run_dir} has no checkpoint that loads" in err and "Traceback" not in err
    assert files_of(tmp_path) == before  # not retrained from scratch inside the old run


def test_a_resume_whose_checkpoint_does_not_fit_the_model_fails_before_touching_the_run(tmp_path: Path, capsys) -> None:
    assert main(["--config", "cnn_digits", "--trainer.max_epochs", "1", "--run.root", str(tmp_path)]) == 0
    (run_dir,) = (tmp_path / "cnn_digits").iterdir()
    (run_dir / "summary.json").unlink()  # as if stopped after its last checkpoint
    before = files_of(tmp_path)
    resume = ["--run.resume", str(run_dir), "--run.root", str(tmp_path), "--model.net.channels", "[8,16]"]
    assert main(resume) == 2
    err = capsys.readouterr().err
    assert f"checkpoint {run_dir / 'checkpoints' / 'last.ckpt'} does not fit this model" in err
    assert "weights differ, e.g. net." in err and "this model's" in err
    assert "Traceback" not in err
    assert files_of(tmp_path) == before  # history, config and W&B files as they were


def files_of(root: Path) -> dict[str, bytes | None]:
    """Every file under `root` with its contents; W&B's files by name only (its service may still be writing
    its logs of the run before: a new W&B segment would be new files)."""
    files = (path for path in sorted(root.rglob("*")) if path.is_file())
    return {str(p.relative_to(root)): None if "wandb" in p.relative_to(root).parts else p.read_bytes() for p in files}


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cwd = tmp_path_factory.mktemp("reference")
    assert run_cli(*DIGITS, cwd=cwd).returncode == 0
    (run_dir,) = (cwd / "runs" / "cnn_digits").iterdir()
    return run_dir


@pytest.mark.slow
@pytest.mark.parametrize(
    ("signal_name", "code", "how", "at_step"),
    [("SIGTERM", 143, "by_dir", 47), ("SIGUSR1", 138, "auto", 27), ("SIGTERM", 143, "by_dir", 59)],
)
def test_killed_mid_epoch_and_resumed_ends_as_if_never_stopped(
    signal_name: str, code: int, how: str, at_step: int, uninterrupted: Path, tmp_path: Path
) -> None:
    """Digits, 3 epochs of 20 steps, dropout on: a real signal arrives as step `at_step` starts, in the middle
    of the last epoch (47) or of the second (27), or in the last step (59: the run stops before testing)."""
    stop = ["--trainer.callbacks+=tests.signals.SignalAt", f"--trainer.callbacks.step={at_step}"]
    stopped = run_cli(*DIGITS, *stop, f"--trainer.callbacks.signal_name={signal_name}", cwd=tmp_path)
    assert stopped.returncode == code, stopped.stderr[-2000:]
    (run_dir,) = (tmp_path / "runs" / "cnn_digits").iterdir()
    # The signal arrives as the step starts; the run stops before the next batch it would start.
    step = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["global_step"]
    assert step in (at_step, at_step + 1) and f"preempted: {signal_name} at step {step}" in stopped.stderr
    assert "Traceback" not in stopped.stderr
    assert not (run_dir / "summary.json").exists()  # unfinished: resumable

    resume = ["--run.resume", str(run_dir)] if how == "by_dir" else [*DIGITS, "--run.resume", "auto"]
    resumed = run_cli(*resume, cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"resuming {run_dir} from last.ckpt" in resumed.stderr
    assert [p.name for p in (tmp_path / "runs" / "cnn_digits").iterdir()] == [run_dir.name]  # same directory

    weights, summary = final_state(run_dir)
    expected_weights, expected_summary = final_state(uninterrupted)
    for name, tensor in expected_weights.items():
        torch.testing.assert_close(weights[name], tensor, rtol=0, atol=1e-6)
    # Every metric, the interrupted epoch's training accuracy and F1 included (their counts are checkpointed).
    metrics = {name for name, value in expected_summary.items() if isinstance(value, float)} - {"wall_time_s"}
    assert {"train/acc", "train/f1", "test/acc", "val/loss"} <= metrics <= set(summary)
    for name in metrics:
        assert summary[name] == pytest.approx(expected_summary[name], abs=1e-6), name
    for metric in ("train/loss", "train/acc", "val/acc"):  # the same steps, none twice, and the same values
        (steps, values), (expected_steps, expected_values) = history(run_dir, metric), history(uninterrupted, metric)
        assert steps == expected_steps and values == pytest.approx(expected_values, abs=1e-6), metric

    before, after = wandb_train_steps(run_dir)  # one W&B run id, two offline segments
    (reference,) = wandb_train_steps(uninterrupted)
    # No step twice, none missing:
    assert before + after == reference and all(s < step for s in before) and all(s >= step for s in after)


@pytest.mark.slow
def test_a_resume_with_other_options_records_them_and_keeps_the_earlier_config(tmp_path: Path) -> None:
    stop = ["--trainer.callbacks+=tests.signals.SignalAt", "--trainer.callbacks.step=5"]
    assert run_cli("--config", "cnn_digits", "--trainer.max_epochs", "1", *stop, cwd=tmp_path).returncode == 143
    (run_dir,) = (tmp_path / "runs" / "cnn_digits").iterdir()
    first = (run_dir / "config.yaml").read_text()
    resumed = run_cli("--run.resume", str(run_dir), "--trainer.max_epochs", "2", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 40  # 2 epochs
    kept = sorted(p.name for p in run_dir.glob("config*.yaml"))
    assert kept == ["config.until-step-6.yaml", "config.yaml"] or kept == ["config.until-step-5.yaml", "config.yaml"]
    assert (run_dir / kept[0]).read_text() == first
    assert "max_epochs: 2" in (run_dir / "config.yaml").read_text() and "max_epochs: 1" in first
    assert f"its config until step {kept[0].split('-')[-1][:-5]} is {run_dir / kept[0]}" in resumed.stderr
