"""Sweeps: planning trials from W&B's spec format, mistakes in a spec, and a real offline sweep."""

from __future__ import annotations

import json
import math
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch
import yaml

from experiments.compare import main as compare
from experiments.run import main as run
from experiments.rundir import locked
from experiments.sweep import SweepState
from experiments.sweep import main as sweep
from experiments.sweep_spec import load_spec, plan_trials, trial_args
from tests.helpers import HANG_GUARD_S, fresh_env, run_module
from validation import ConfigError

COMMAND = ["${env}", "${interpreter}", "-m", "experiments.run", "--config", "cnn_digits", "${args}"]


def write_spec(directory: Path, **spec: object) -> Path:
    spec = {"command": COMMAND, "method": "grid", "metric": {"name": "val/acc", "goal": "maximize"}} | spec
    path = directory / f"{spec.get('name', 'spec')}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def test_grid_plans_every_combination_in_order(tmp_path: Path) -> None:
    params = {"model.lr": {"values": [0.1, 0.01]}, "model.net.dropout": {"values": [0.0, 0.5]}, "x": {"value": 3}}
    spec = load_spec(write_spec(tmp_path, parameters=params))
    trials = plan_trials(spec)
    pairs = [(t["model.lr"], t["model.net.dropout"]) for t in trials]
    assert pairs == [(0.1, 0.0), (0.1, 0.5), (0.01, 0.0), (0.01, 0.5)]
    assert all(t["x"] == 3 for t in trials)
    assert plan_trials(spec, count=3) == trials[:3]
    assert spec.base_args == ["--config", "cnn_digits"]
    assert trial_args(spec, trials[1]) == [
        "--config",
        "cnn_digits",
        "--model.lr=0.1",
        "--model.net.dropout=0.5",
        "--x=3",
    ]


def test_nested_parameters_become_dotted_keys(tmp_path: Path) -> None:
    core = {"parameters": {"channels": {"value": [8, 16]}}}
    params = {"model": {"parameters": {"lr": {"values": [1, 2]}, "net": core}}}
    spec = load_spec(write_spec(tmp_path, parameters=params))
    assert list(spec.parameters) == ["model.lr", "model.net.channels"]
    assert trial_args(spec, plan_trials(spec)[0])[-1] == "--model.net.channels=[8, 16]"


def test_random_search_is_seeded_extends_and_respects_distributions(tmp_path: Path) -> None:
    params = {
        "lr": {"distribution": "log_uniform_values", "min": 1e-4, "max": 1e-1},
        "dropout": {"min": 0.0, "max": 0.5},
        "layers": {"min": 1, "max": 3},
        "width": {"distribution": "q_uniform", "min": 16, "max": 128, "q": 16},
        "optimizer": {"values": ["adam", "sgd"], "probabilities": [0.9, 0.1]},
        "scale": {"distribution": "log_uniform", "min": 0, "max": 1},
    }
    spec = load_spec(write_spec(tmp_path, method="random", parameters=params))
    trials = plan_trials(spec, count=200, seed=1)
    assert plan_trials(spec, count=200, seed=1) == trials  # resumable: the same plan every time
    assert plan_trials(spec, count=50, seed=1) == trials[:50]  # a larger count extends the plan
    assert plan_trials(spec, count=50, seed=2) != trials[:50]
    assert all(1e-4 <= t["lr"] <= 1e-1 and 0 <= t["dropout"] <= 0.5 for t in trials)
    assert {t["layers"] for t in trials} == {1, 2, 3} and all(isinstance(t["layers"], int) for t in trials)
    assert all(t["width"] % 16 == 0 and 16 <= t["width"] <= 128 for t in trials)
    assert all(1 <= t["scale"] <= math.e for t in trials)
    small_lr = sum(t["lr"] < 1e-2 for t in trials) / len(trials)
    assert 0.5 < small_lr < 0.85  # log-uniform: two of three decades below 1e-2
    assert 0.8 < sum(t["optimizer"] == "adam" for t in trials) / len(trials) < 0.97


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"method": "hyperband"}, "method must be one of grid, random, bayes"),
        ({"parameters": {"lr": {"min": 0.1, "max": 1.0}}}, "grid search needs value or values"),
        ({"method": "random", "parameters": {"lr": {"min": 1.0, "max": 0.1}}}, "needs numbers min < max"),
        ({"method": "random", "parameters": {"lr": {"distribution": "beta"}}}, "'beta' is not one of"),
        ({"parameters": {"lr": 0.1}}, "parameter lr must be a mapping"),
        ({"parameters": {}}, "parameters must be a non-empty mapping"),
        ({"parameters": {"lr": {"values": []}}}, "values must be a non-empty list"),
        ({"early_stop": True}, "unknown key early_stop"),
        ({"command": ["python", "train.py"]}, "command must be a list that runs experiments.run"),
        ({"metric": {"name": "val/acc", "goal": "up"}}, "goal must be minimize or maximize"),
        ({"method": "random", "parameters": {"lr": {"min": 0.1, "max": 1.0}}, "run_cap": 0}, "run_cap must be"),
    ],
)
def test_spec_mistakes(spec: dict, message: str, tmp_path: Path) -> None:
    spec = {"parameters": {"lr": {"values": [0.1]}}} | spec
    with pytest.raises(ConfigError, match=message):
        load_spec(write_spec(tmp_path, **spec))


@pytest.mark.parametrize(
    ("spec", "args", "message"),
    [
        ({"parameters": {"model.lrx": {"values": [0.1]}}}, [], "rejects the trial --model.lrx=0.1: Option 'lrx'"),
        ({"parameters": {"model.lr": {"values": [0.1, "fast"]}}}, [], "rejects the trial --model.lr=fast"),
        ({"method": "bayes", "parameters": {"model.lr": {"min": 0.1, "max": 1.0}}}, [], "needs a number of trials"),
        (
            {"method": "bayes", "parameters": {"model.lr": {"distribution": "normal", "mu": 0.1, "sigma": 0.01}}},
            ["--count", "3"],
            "cannot search the normal distribution",
        ),
        (
            {"method": "bayes", "parameters": {"model.lr": {"min": 0.1, "max": 1.0}}, "metric": {}},
            ["--count", "3"],
            "bayes needs a metric",
        ),
        ({"method": "bayes", "parameters": {"model.lrx": {"min": 0.1, "max": 1.0}}}, ["--count", "3"], "Option 'lrx'"),
        ({"method": "random", "parameters": {"model.lr": {"min": 0.1, "max": 1.0}}}, [], "needs a number of trials"),
        (
            {"parameters": {"model.lr": {"values": [0.1]}}, "early_terminate": {"type": "hyperband", "s": 2}},
            [],
            "early_terminate: s cannot be honoured offline",
        ),
        (
            {"parameters": {"model.lr": {"values": [0.1]}}, "early_terminate": {"type": "median"}},
            [],
            "early_terminate must be {type: hyperband",
        ),
        (
            {"parameters": {"model.lr": {"values": [0.1]}}, "early_terminate": {"type": "hyperband", "eta": 1}},
            [],
            "eta must be an integer of at least 2",
        ),
        ({"parameters": {"model.lr": {"values": [0.1]}}}, ["--count", "0"], "--count must be at least 1"),
        ({"parameters": {"model.lr": {"min": 0.1, "max": 1.0}}}, ["--method", "grid"], "grid search needs"),
    ],
)
def test_sweep_cli_mistakes_exit_2_before_any_trial(
    spec: dict, args: list, message: str, tmp_path: Path, capsys
) -> None:
    path = write_spec(tmp_path, name="bad", **spec)
    assert sweep([str(path), "--root", str(tmp_path / "runs"), *args]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not (tmp_path / "runs").exists()  # nothing written


def test_a_sweep_name_that_would_lead_out_of_its_root_is_refused(tmp_path: Path, capsys) -> None:
    spec = {"name": "../../x", "command": COMMAND, "method": "grid", "parameters": {"model.lr": {"values": [0.1]}}}
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    assert sweep([str(path), "--root", str(tmp_path / "a" / "runs")]) == 2
    err = capsys.readouterr().err
    assert "name must be a plain name, one folder under the root" in err and len(err.strip().splitlines()) == 1
    assert list(tmp_path.rglob("*")) == [path]  # nothing written, inside the root or out of it


def test_seeds_refuses_a_seed_numpy_cannot_take_before_any_run(tmp_path: Path, capsys) -> None:
    from experiments.seeds import main as seeds

    assert seeds(["cnn_digits", "--seeds", "-1", "2", "--root", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err
    assert err.strip() == "error: --seeds must be in [0, 4294967295], got -1"
    assert not (tmp_path / "runs").exists()


def test_a_sweep_over_every_seed_fails_when_a_seed_did_not_finish(tmp_path: Path, capsys) -> None:
    """A search may lose a trial and still exit 0; seeds, whose spread is over every seed asked for, may not."""
    from experiments.sweep import report

    spec = load_spec(write_spec(tmp_path, name="s", parameters={"seed_everything": {"values": [0, 1]}}))
    finished = {"index": 0, "params": {"seed_everything": 0}, "status": "finished", "run_dir": None}
    failed = {"index": 1, "params": {"seed_everything": 1}, "status": "failed", "error": "error: it broke"}
    state = {"trials": {"0": finished, "1": failed}}
    assert report(spec, state, 2, tmp_path) == 0  # a search
    assert report(spec, state, 2, tmp_path, every_trial=True) == 1
    out, err = capsys.readouterr()
    assert "failed trial 2: seed_everything=1: error: it broke" in out
    assert err.strip() == "error: 1 of 2 trials did not finish; see above"


def test_missing_and_broken_spec_files(tmp_path: Path, capsys) -> None:
    assert sweep([str(tmp_path / "nope.yaml")]) == 2
    assert "sweep spec" in capsys.readouterr().err
    broken = tmp_path / "broken.yaml"
    broken.write_text("method: grid\nparameters: {lr: [\n")
    assert sweep([str(broken)]) == 2
    assert f"YAML syntax error in {broken}, line" in capsys.readouterr().err


def test_a_changed_spec_does_not_resume_another_sweep(tmp_path: Path, capsys) -> None:
    spec = load_spec(write_spec(tmp_path, name="s", parameters={"model.lr": {"values": [0.1]}}))
    with SweepState(tmp_path / "runs" / "s", spec).locked():
        pass  # a sweep.json of the first spec
    path = write_spec(tmp_path, name="s", parameters={"model.lr": {"values": [0.2]}})
    assert sweep([str(path), "--root", str(tmp_path / "runs")]) == 2
    assert "planned from a different method, parameters or command" in capsys.readouterr().err


def test_trials_are_claimed_once_and_stale_claims_are_taken_over(tmp_path: Path) -> None:
    spec = load_spec(write_spec(tmp_path, parameters={"model.lr": {"values": [0.1, 0.2]}}))
    first, second = SweepState(tmp_path / "s", spec), SweepState(tmp_path / "s", spec)
    claim = first.claim(0, {"model.lr": 0.1}, retry_failed=False)
    assert claim is not None and second.claim(0, {"model.lr": 0.1}, retry_failed=False) is None  # running here
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    with first.locked() as state:
        state["trials"]["0"]["pid"] = int(dead.stdout)  # its process is gone: the claim is stale
    retaken = second.claim(0, {"model.lr": 0.1}, retry_failed=False)
    assert retaken is not None and retaken["run_id"] != claim["run_id"]
    first.record(retaken | {"status": "failed"})
    assert second.claim(0, {"model.lr": 0.1}, retry_failed=False) is None
    assert second.claim(0, {"model.lr": 0.1}, retry_failed=True) is not None


def test_a_trial_that_outlived_its_sweep_is_not_run_twice_and_a_stopped_one_resumes(tmp_path: Path) -> None:
    """A claim whose sweep process is gone, but whose run a live trial process still trains (it holds the
    run directory's lock), is left alone; once that process has ended, the trial resumes the same run, or,
    if that process finished the run, is recorded as finished."""
    spec = load_spec(write_spec(tmp_path, parameters={"model.lr": {"values": [0.1]}}))
    state = SweepState(tmp_path / "s", spec)
    claim = state.claim(0, {"model.lr": 0.1}, retry_failed=False)
    assert claim is not None and not claim["resume"]
    run_dir = tmp_path / "s" / claim["run_id"]
    (run_dir / "checkpoints").mkdir(parents=True)
    (run_dir / "checkpoints" / "last.ckpt").write_bytes(b"saved before the sweep was killed")
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    with state.locked() as trials:
        trials["trials"]["0"]["pid"] = int(dead.stdout)  # the sweep that started the trial is gone
    hold = "import sys, time\nfrom experiments.rundir import run_lock\nwith run_lock(sys.argv[1]):\n"
    hold += " print(1, flush=True); time.sleep(60)"
    trial = subprocess.Popen([sys.executable, "-c", hold, str(run_dir)], stdout=subprocess.PIPE, env=fresh_env())
    try:
        assert trial.stdout is not None and trial.stdout.readline() == b"1\n"  # the lock is held
        assert state.claim(0, {"model.lr": 0.1}, retry_failed=False) is None  # still trained: not run twice
    finally:
        trial.terminate()
        trial.wait()
    retaken = state.claim(0, {"model.lr": 0.1}, retry_failed=False)
    assert retaken is not None and retaken["run_id"] == claim["run_id"] and retaken["resume"]

    with state.locked() as trials:
        trials["trials"]["0"]["pid"] = int(dead.stdout)  # the sweep is gone again; its trial went on, and finished
    (run_dir / "summary.json").write_text('{"val/acc": 0.75}')
    assert state.claim(0, {"model.lr": 0.1}, retry_failed=False) is None  # not trained again: recorded
    trial = state.read()["trials"]["0"]
    assert trial["status"] == "finished" and trial["metric"] == 0.75 and trial["run_dir"] == str(run_dir)


class SignalSweepAt(L.Callback):
    """Sends `signal_name` to the sweep (this trial's parent process) as training step `step` starts, once
    per working directory (a marker file), so that neither the resumed trial nor a later one sends it."""

    def __init__(self, step: int, signal_name: str = "SIGTERM") -> None:
        self.step = step
        self.signal_name = signal_name

    def on_train_batch_start(self, trainer: L.Trainer, *args: Any) -> None:
        marker = Path("sweep-signalled")
        if trainer.global_step == self.step and not marker.exists():
            marker.touch()
            os.kill(os.getppid(), getattr(signal, self.signal_name))


def sweep_cli(spec: Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    return run_module("experiments.sweep", str(spec), "--root", str(cwd / "runs"), cwd=cwd)


def signalled_spec(directory: Path, signal_name: str, lrs: list[float]) -> Path:
    """Trials of the digits CNN (2 epochs, 40 steps) whose first one signals the sweep at step 25, in its second."""
    signal_sweep = ["--trainer.callbacks+=tests.test_sweep.SignalSweepAt", "--trainer.callbacks.step=25"]
    command = [*COMMAND[:-1], *signal_sweep, f"--trainer.callbacks.signal_name={signal_name}", "${args}"]
    parameters = {"model.lr": {"values": lrs}, "trainer.max_epochs": {"value": 2}}
    return write_spec(directory, name="digits", command=command, parameters=parameters)


def saved_step(run_dir: Path) -> int:
    return int(torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["global_step"])


@pytest.mark.slow
def test_a_sweep_stopped_by_sigterm_stops_its_trial_and_resumes_it(tmp_path: Path, capsys) -> None:
    """SIGTERM to the sweep in its first trial: the trial saves and stops, the sweep records it as
    interrupted and exits 143 in one line; the same command again resumes that trial's run, then runs the
    second trial: two runs for two trials, each trained once."""
    spec = signalled_spec(tmp_path, "SIGTERM", [0.003, 0.001])
    first = sweep_cli(spec, tmp_path)
    assert first.returncode == 143, first.stdout + first.stderr[-3000:]
    assert "Traceback" not in first.stderr
    stop = "sweep stopped by SIGTERM in trial 1 (interrupted); the same command resumes it: python -m experiments.sweep"
    assert first.stderr.strip().splitlines()[-1].startswith(stop)
    sweep_dir = tmp_path / "runs" / "digits"
    trials = json.loads((sweep_dir / "sweep.json").read_text())["trials"]
    assert list(trials) == ["0"] and trials["0"]["status"] == "interrupted" and trials["0"]["exit_code"] == 143
    run_dir = Path(trials["0"]["run_dir"])
    assert saved_step(run_dir) >= 25 and not (run_dir / "summary.json").exists()
    assert not locked(run_dir)  # the trial has ended: the sweep waited for it

    second = sweep_cli(spec, tmp_path)
    assert second.returncode == 0, second.stdout + second.stderr[-3000:]
    assert f"trial 1/2  model.lr=0.003 trainer.max_epochs=2  ->  {run_dir}  (resuming)" in second.stdout
    assert "2 finished, 0 failed, 0 not run" in second.stdout
    trials = json.loads((sweep_dir / "sweep.json").read_text())["trials"]
    assert trials["0"]["run_dir"] == str(run_dir) and trials["0"]["status"] == "finished"
    runs = sorted(p.parent for p in sweep_dir.glob("*/config.yaml"))
    assert runs == sorted([run_dir, Path(trials["1"]["run_dir"])])  # no third run
    assert f"resuming {run_dir} from last.ckpt" in Path(trials["0"]["log"]).read_text()
    assert json.loads((run_dir / "summary.json").read_text())["test/acc"] > 0.5

    assert compare([str(sweep_dir), "--output", str(tmp_path / "c.png")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "sweep digits: 2 finished" and len(lines) == 1 + 1 + 2 + 1  # each run listed once


@pytest.mark.slow
def test_a_trial_whose_sweep_is_killed_saves_and_stops_then_resumes(tmp_path: Path) -> None:
    """kill -9 of the sweep in its first trial: the kernel sends the trial SIGTERM (it dies with its parent,
    never an orphan), so it saves and stops; the same command again resumes that run."""
    spec = signalled_spec(tmp_path, "SIGKILL", [0.003])
    assert sweep_cli(spec, tmp_path).returncode == -signal.SIGKILL
    (run_dir,) = (p.parent for p in (tmp_path / "runs" / "digits").glob("*/config.yaml"))
    deadline = time.monotonic() + HANG_GUARD_S
    while locked(run_dir):  # the trial is still saving
        assert time.monotonic() < deadline
        time.sleep(0.5)
    assert saved_step(run_dir) >= 25 and not (run_dir / "summary.json").exists()
    (log,) = (tmp_path / "runs" / "digits" / "logs").glob("trial-000-*.log")
    assert "preempted: SIGTERM at step" in log.read_text()
    resumed = sweep_cli(spec, tmp_path)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr[-3000:]
    assert "(resuming)" in resumed.stdout and json.loads((run_dir / "summary.json").read_text())["test/acc"] > 0.5


@pytest.mark.slow
def test_ctrl_c_to_a_sweep_reaches_its_trial_once(tmp_path: Path) -> None:
    """SIGINT (Ctrl-C) to the sweep: the trial gets it once, so it saves before it stops (a second Ctrl-C
    would stop it at once); the sweep exits 130."""
    result = sweep_cli(signalled_spec(tmp_path, "SIGINT", [0.003]), tmp_path)
    assert result.returncode == 130, result.stdout + result.stderr[-3000:]
    assert "sweep stopped by SIGINT in trial 1 (interrupted)" in result.stderr and "Traceback" not in result.stderr
    trial = json.loads((tmp_path / "runs" / "digits" / "sweep.json").read_text())["trials"]["0"]
    assert trial["status"] == "interrupted" and trial["exit_code"] == 130
    assert saved_step(Path(trial["run_dir"])) >= 25


@pytest.mark.slow
def test_offline_sweep_records_a_failure_goes_on_and_resumes(tmp_path: Path, capsys) -> None:
    """Four trials of the digits CNN, the third with an impossible dropout; stopped after three, resumed."""
    parameters = {
        "model.net.dropout": {"values": [0.0, 0.2, 1.5, 0.4]},
        "trainer.max_epochs": {"value": 1},
        "trainer.limit_train_batches": {"value": 5},
    }
    path = write_spec(tmp_path, name="digits", parameters=parameters)
    root = tmp_path / "runs"
    assert sweep([str(path), "--root", str(root), "--count", "3"]) == 0
    out = capsys.readouterr().out
    assert "failed (exit 2)" in out and "dropout must be in [0.0, 0.999], got 1.5" in out
    assert "2 finished, 1 failed, 0 not run" in out

    assert sweep([str(path), "--root", str(root)]) == 0  # resumes: runs the fourth trial only
    out = capsys.readouterr().out
    assert out.count("\ntrial ") + out.startswith("trial ") == 1 and "trial 4/4" in out
    assert "skipped 3 trials" in out and "3 finished, 1 failed, 0 not run" in out

    state = json.loads((root / "digits" / "sweep.json").read_text())
    trials = [state["trials"][str(i)] for i in range(4)]
    assert [t["status"] for t in trials] == ["finished", "finished", "failed", "finished"]
    assert trials[2]["exit_code"] == 2 and "dropout" in trials[2]["error"] and trials[2]["run_dir"] is None
    for trial in (trials[0], trials[1], trials[3]):
        run_dir = Path(trial["run_dir"])
        assert run_dir.parent == root / "digits"  # ordinary run directories of the sweep's experiment
        config = yaml.safe_load((run_dir / "config.yaml").read_text())
        assert config["model"]["init_args"]["net"]["init_args"]["dropout"] == trial["params"]["model.net.dropout"]
        summary = json.loads((run_dir / "summary.json").read_text())
        assert trial["metric"] == summary["val/acc"] and "test/acc" in summary
    best = max((t for t in trials if t["status"] == "finished"), key=lambda t: t["metric"])
    assert f"best val/acc={best['metric']:.4g}: trial {best['index'] + 1}" in out

    runs_before = sorted(p.name for p in (root / "digits").iterdir())
    assert sweep([str(path), "--root", str(root)]) == 0  # everything done: nothing runs
    out = capsys.readouterr().out
    assert "trial 1/4" not in out and "skipped 4 trials" in out
    assert sorted(p.name for p in (root / "digits").iterdir()) == runs_before

    assert compare([str(root / "digits"), "--output", str(tmp_path / "c.png")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "sweep digits: 3 finished, 1 failed"
    assert "failed trial 3: error: dropout must be in [0.0, 0.999], got 1.5" in lines[1]
    assert lines[2].split()[:2] == ["run", "model.net.dropout"] and len(lines) == 3 + 3 + 1


def test_the_wandb_agent_command_is_one_the_run_accepts(tmp_path: Path) -> None:
    """Online, W&B's agent builds each trial's command from the spec; expand it with W&B's own helpers."""
    from wandb.sdk.launch.sweeps import utils as wandb_sweeps

    from experiments.run import main as run
    from experiments.sweep import wandb_sweep_config

    spec = load_spec(write_spec(tmp_path, name="online", parameters={"model.lr": {"values": [0.01]}}))
    config = wandb_sweep_config(spec, tmp_path / "runs")
    assert config["method"] == "grid" and config["metric"] == {"name": "val/acc", "goal": "maximize"}
    macros = wandb_sweeps.create_sweep_command_args({"args": {"model.lr": {"value": 0.01}}})
    macros |= {"env": ["/usr/bin/env"], "interpreter": [sys.executable], "program": [config["program"]]}
    command: list[str] = []
    for part in wandb_sweeps.create_sweep_command(config["command"]):
        command += macros.get(part[2:-1], []) if part.startswith("${") else [part]
    assert command[1:4] == [sys.executable, "-m", "experiments.run"]
    run_args = command[4:]
    assert run_args == [
        "--config",
        "cnn_digits",
        "--run.experiment=online",
        f"--run.root={(tmp_path / 'runs').absolute()}",
        "--model.lr=0.01",
    ]
    with pytest.raises(SystemExit) as exit_:
        run([*run_args, "--print_config"])
    assert exit_.value.code == 0


def test_a_wandb_sweep_trial_uses_the_agent_run_id(monkeypatch: pytest.MonkeyPatch) -> None:
    from experiments.tracking import wandb_sweep_run_id

    monkeypatch.setenv("WANDB_RUN_ID", "abc123")
    assert wandb_sweep_run_id() is None  # a run id alone is not a sweep
    monkeypatch.setenv("WANDB_SWEEP_ID", "sweep9")
    assert wandb_sweep_run_id() == "abc123"


@pytest.mark.slow
def test_seeds_runs_a_preset_per_seed_and_prints_the_spread_of_its_test_metrics(tmp_path: Path, capsys) -> None:
    """Two short digits runs that differ only in their seed: mean ± sample std of each test metric, from
    the runs' own summaries; the same command again trains nothing."""
    from experiments.seeds import main as seeds

    root = tmp_path / "runs"
    options = ["--trainer.max_epochs=1", "--trainer.limit_train_batches=3", "--run.logger=none"]
    assert seeds(["cnn_digits", "--seeds", "0", "1", "--root", str(root), "--", *options]) == 0
    out = capsys.readouterr().out
    assert "2 finished, 0 failed, 0 not run" in out
    (sweep_dir,) = root.iterdir()
    assert sweep_dir.name.startswith("cnn_digits_seeds_")  # not the defaults: a directory of its own
    state = json.loads((sweep_dir / "sweep.json").read_text())
    runs = [Path(state["trials"][str(i)]["run_dir"]) for i in range(2)]
    configs = [yaml.safe_load((run / "config.yaml").read_text()) for run in runs]
    assert [c["seed_everything"] for c in configs] == [0, 1] and configs[0]["trainer"]["max_epochs"] == 1
    accuracy = [json.loads((run / "summary.json").read_text())["test/acc"] for run in runs]
    assert accuracy[0] != accuracy[1]  # the seed changes the initialisation
    mean, std = sum(accuracy) / 2, abs(accuracy[0] - accuracy[1]) / math.sqrt(2)
    assert "over seeds 0, 1 (mean ± sample std; each seed):" in out
    assert f"test/acc                 {mean:.4g} ± {std:.2g}  ({accuracy[0]:.4g}, {accuracy[1]:.4g})" in out

    assert seeds(["cnn_digits", "--seeds", "0", "1", "--root", str(root), "--", *options]) == 0
    out = capsys.readouterr().out
    assert "skipped 2 trials" in out and "test/acc" in out  # resumed: nothing trained, the spread again


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["cnn_digits", "--seeds", "3"], "--seeds needs two or more different seeds"),
        (["no_such_preset"], "rejects the trial"),
    ],
)
def test_seeds_mistakes_exit_2_before_any_run(args: list[str], message: str, tmp_path: Path, capsys) -> None:
    from experiments.seeds import main as seeds

    assert seeds([*args, "--root", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").rglob("config.yaml"))


def test_a_claim_from_another_host_lasts_while_its_lease_is_renewed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another host's process cannot be asked whether it lives: its claim holds while its sweep renews the
    lease, and is taken over, resuming the trial's run, once the lease has run out."""
    monkeypatch.setenv("FIRSTLIGHT_SWEEP_LEASE_S", "0.4")
    spec = load_spec(write_spec(tmp_path, parameters={"model.lr": {"values": [0.1]}}))
    state = SweepState(tmp_path / "s", spec)
    claim = state.claim(0, {"model.lr": 0.1}, retry_failed=False)
    assert claim is not None
    run_dir = tmp_path / "s" / claim["run_id"]
    (run_dir / "checkpoints").mkdir(parents=True)
    (run_dir / "checkpoints" / "last.ckpt").write_bytes(b"saved on the other host")
    with state.leased(claim):
        with state.locked() as trials:
            trials["trials"]["0"]["host"] = "another-host"  # as a sweep there would have written it
        claim["host"] = "another-host"
        time.sleep(1.0)  # over twice the lease: renewed meanwhile
        assert state.claim(0, {"model.lr": 0.1}, retry_failed=False) is None
    time.sleep(0.5)  # no longer renewed: the lease runs out
    retaken = state.claim(0, {"model.lr": 0.1}, retry_failed=False)
    assert retaken is not None and retaken["run_id"] == claim["run_id"] and retaken["resume"]
    assert retaken["host"] == socket.gethostname()


def last_step(run_dir: str) -> int:
    return int(torch.load(Path(run_dir) / "checkpoints" / "last.ckpt", weights_only=True)["global_step"])


@pytest.mark.slow
def test_early_terminate_stops_a_hopeless_trial_after_its_first_validation_and_records_it_pruned(
    tmp_path: Path,
) -> None:
    """Hyperband with one rung, at the first validation: the second trial (a learning rate that cannot learn
    in an epoch) is behind the first there, stopped after 1 of 3 epochs, and recorded as pruned."""
    early = {"type": "hyperband", "min_iter": 1, "max_iter": 2, "eta": 3}
    parameters = {"model.lr": {"values": [0.01, 1e-7]}, "trainer.max_epochs": {"value": 3}}
    command = [*COMMAND[:-1], "--run.logger", "csv", "${args}"]
    spec = write_spec(tmp_path, name="pruned", command=command, parameters=parameters, early_terminate=early)
    result = sweep_cli(spec, tmp_path)
    assert result.returncode == 0, result.stderr
    assert "early termination (Optuna Hyperband)" in result.stdout and "  pruned in " in result.stdout
    assert "1 finished, 1 pruned, 0 failed" in result.stdout
    trials = json.loads((tmp_path / "runs" / "pruned" / "sweep.json").read_text())["trials"]
    assert trials["0"]["status"] == "finished" and trials["1"]["status"] == "pruned"
    assert trials["1"]["pruned_at"] == 1 and list(trials["1"]["intermediate"]) == ["1"]
    assert list(trials["0"]["intermediate"]) == ["1", "2", "3"]
    steps_per_epoch = last_step(trials["0"]["run_dir"]) // 3
    assert last_step(trials["1"]["run_dir"]) == steps_per_epoch  # trained one epoch of three


@pytest.mark.slow
def test_a_bayesian_search_offline_proposes_trials_resumes_and_extends(tmp_path: Path) -> None:
    parameters = {
        "model.lr": {"distribution": "log_uniform_values", "min": 1e-4, "max": 1e-1},
        "model.net.dropout": {"min": 0.0, "max": 0.5},
        "trainer.max_epochs": {"value": 1},
    }
    command = [*COMMAND[:-1], "--run.logger", "csv", "--trainer.limit_train_batches", "3", "${args}"]
    spec = write_spec(tmp_path, name="bayes", method="bayes", run_cap=1, command=command, parameters=parameters)
    result = sweep_cli(spec, tmp_path)
    assert result.returncode == 0, result.stderr
    assert "Bayesian search (Optuna TPE), 1 trials" in result.stdout and "1 finished, 0 failed" in result.stdout
    path = tmp_path / "runs" / "bayes" / "sweep.json"
    first = json.loads(path.read_text())["trials"]
    again = sweep_cli(spec, tmp_path)  # the same command: nothing left to run
    assert again.returncode == 0 and "skipped 1 trials" in again.stdout
    longer = run_module("experiments.sweep", str(spec), "--root", str(tmp_path / "runs"), "--count", "2", cwd=tmp_path)
    assert longer.returncode == 0, longer.stderr
    trials = json.loads(path.read_text())["trials"]
    assert [trials[str(i)]["status"] for i in range(2)] == ["finished"] * 2
    assert {key: trials[key]["params"] for key in first} == {key: first[key]["params"] for key in first}
    for trial in trials.values():
        assert 1e-4 <= trial["params"]["model.lr"] <= 1e-1 and 0.0 <= trial["params"]["model.net.dropout"] <= 0.5
    assert len({trial["run_id"] for trial in trials.values()}) == 2
    assert len(list((tmp_path / "runs" / "bayes").glob("*/summary.json"))) == 2


@pytest.mark.parametrize(
    ("command", "args"),
    [
        (sweep, ["--cluster", "slurm", "--workers", "2"]),
        (sweep, ["--workers", "2"]),
        (sweep, ["--cluster", "pbs"]),
        (run, ["--config", "cnn_digits", "--cluster", "slurm", "--cluster.gpus", "2"]),
        (run, ["--config", "cnn_digits", "--cluster.time", "1:00:00"]),
        (run, ["--config", "cnn_digits", "--cluster", "slurm", "--cluster.nodes", "0"]),
    ],
)
def test_cluster_submission_mistakes_and_a_machine_without_slurm_get_one_line(
    command: Any, args: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "no-slurm-here"))  # no sbatch
    spec = [str(write_spec(tmp_path, parameters={"model.lr": {"values": [0.1]}}))] if command is sweep else []
    assert command([*spec, *args, "--root" if command is sweep else "--run.root", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    if "slurm" in args and "0" not in args:
        assert "--cluster slurm needs SLURM's sbatch, which is not on PATH here" in err
    assert not (tmp_path / "runs").exists()
