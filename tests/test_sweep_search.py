"""An offline sweep's search on Optuna, asked of the sweep's own record: Bayesian proposals that follow the
trials before them, and Hyperband's decisions inside a trial, recorded for the next ones."""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path
from typing import Any

import pytest
import yaml

from experiments.sweep import SweepState
from experiments.sweep_search import hyperband_settings, propose, rebuilt_study, report
from experiments.sweep_spec import load_spec
from validation import ConfigError

pytest.importorskip("optuna")

COMMAND = ["${env}", "${interpreter}", "-m", "experiments.run", "--config", "cnn_digits", "${args}"]
SPACE = {
    "model.lr": {"distribution": "log_uniform_values", "min": 1e-5, "max": 1e-1},
    "model.net.hidden_dim": {"values": [16, 64, 256]},
    "trainer.max_epochs": {"value": 3},
}


def spec_file(tmp_path: Path, **fields: Any) -> Path:
    spec = {"command": COMMAND, "method": "bayes", "metric": {"name": "val/acc", "goal": "maximize"}}
    path = tmp_path / "search.yaml"
    path.write_text(yaml.safe_dump(spec | {"parameters": SPACE} | fields))
    return path


def finished(index: int, params: dict[str, Any], metric: float) -> dict[str, Any]:
    return {"index": index, "params": params, "status": "finished", "metric": metric, "run_id": f"r{index}"}


def test_proposals_are_in_the_space_in_order_and_the_same_for_the_same_history(tmp_path: Path) -> None:
    spec = load_spec(spec_file(tmp_path))
    state = SweepState(tmp_path / "s", spec).new()
    first = propose(spec, state, 0, 0, 30)
    assert list(first) == list(SPACE) and first["trainer.max_epochs"] == 3
    assert 1e-5 <= first["model.lr"] <= 1e-1 and first["model.net.hidden_dim"] in (16, 64, 256)
    assert propose(spec, state, 0, 0, 30) == first and propose(spec, state, 0, 1, 30) != first
    state["trials"]["0"] = {"index": 0, "params": first, "status": "running", "run_id": "r0"}
    assert propose(spec, state, 1, 0, 30) != first  # the running trial is taken into account: no repeat


def test_proposals_follow_the_finished_trials_towards_the_best_region(tmp_path: Path) -> None:
    """After 16 trials whose score peaks at lr = 1e-3, TPE proposes learning rates near it, where random
    draws over the log range land 1 decade away from it on average."""
    spec = load_spec(spec_file(tmp_path))
    state = SweepState(tmp_path / "s", spec).new()
    for index in range(16):
        lr = 10 ** (-5 + 4 * index / 15)
        params = {"model.lr": lr, "model.net.hidden_dim": 64, "trainer.max_epochs": 3}
        state["trials"][str(index)] = finished(index, params, 1 - (math.log10(lr) + 3) ** 2 / 10)
    distances = [abs(math.log10(propose(spec, state, 16, seed, 30)["model.lr"]) + 3) for seed in range(8)]
    assert statistics.median(distances) < 0.5


def test_hyperband_prunes_a_trial_behind_the_others_at_its_rung_and_records_it(tmp_path: Path) -> None:
    """One bracket (max_iter 2 < eta 3 x min_iter): at iteration 1 a trial goes on only if it is the best so far
    of those that reached it."""
    early = {"type": "hyperband", "min_iter": 1, "max_iter": 2, "eta": 3}
    spec = load_spec(
        spec_file(tmp_path, method="grid", parameters={"model.lr": {"values": [0.1, 0.2, 0.3]}}, early_terminate=early)
    )
    state = SweepState(tmp_path / "s", spec)
    for index in range(3):
        assert state.claim(index, {"model.lr": 0.1 * (index + 1)}, retry_failed=False) is not None
    assert not report(state.directory, 0, 0.90)  # the first at the rung
    assert report(state.directory, 1, 0.20)  # behind it: pruned
    assert not report(state.directory, 2, 0.95)  # ahead of it
    trials = json.loads(state.path.read_text())["trials"]
    assert trials["1"]["pruned_at"] == 1 and trials["1"]["intermediate"] == {"1": 0.2}
    assert "pruned_at" not in trials["0"] and trials["0"]["optuna_system_attrs"] == {"completed_rung_0": 0.9}
    assert not report(state.directory, 0, 0.93)  # its second iteration: it goes on (no rung there)
    assert json.loads(state.path.read_text())["trials"]["0"]["intermediate"] == {"1": 0.9, "2": 0.93}


def test_the_record_becomes_a_study_with_each_trial_in_its_state(tmp_path: Path) -> None:
    from optuna.trial import TrialState

    spec = load_spec(spec_file(tmp_path))
    state = SweepState(tmp_path / "s", spec).new()
    params = {"model.lr": 0.01, "model.net.hidden_dim": 16, "trainer.max_epochs": 3}
    state["trials"] = {
        "0": finished(0, params, 0.9),
        "1": finished(1, params, None) | {"status": "failed"},
        "2": {"index": 2, "params": params, "status": "pruned", "intermediate": {"1": 0.3}, "run_id": "r2"},
        "4": {"index": 4, "params": params, "status": "interrupted", "run_id": "r4"},
    }
    study = rebuilt_study(state, {})
    assert [t.state for t in study.trials] == [
        TrialState.COMPLETE,
        TrialState.FAIL,
        TrialState.PRUNED,
        TrialState.FAIL,  # never recorded
        TrialState.RUNNING,
    ]
    assert study.trials[0].value == 0.9 and study.trials[2].intermediate_values == {1: 0.3}


@pytest.mark.parametrize(
    ("early", "message"),
    [
        ({"type": "hyperband", "min_iter": 2, "strict": True}, "strict cannot be honoured offline"),
        ({"type": "hyperband", "min_iter": 0}, "min_iter must be an integer of at least 1"),
        ({"type": "hyperband", "min_iter": 3, "max_iter": 3}, "max_iter must be an integer above min_iter"),
        ({"type": "envelope"}, "must be {type: hyperband"),
    ],
)
def test_early_terminate_that_cannot_be_honoured_is_refused(early: dict, message: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=message):
        hyperband_settings(load_spec(spec_file(tmp_path, early_terminate=early)))


def test_wandbs_engine_proposes_in_the_space_from_the_same_record(tmp_path: Path) -> None:
    """`--engine wandb`: W&B's own Bayesian engine (its `sweeps` package), asked of the same record."""
    pytest.importorskip("sweeps")
    from experiments.sweep_search import propose_wandb

    spec = load_spec(spec_file(tmp_path))
    state = SweepState(tmp_path / "s", spec).new()
    for index in range(4):
        params = {"model.lr": 10 ** (-5 + index), "model.net.hidden_dim": 64, "trainer.max_epochs": 3}
        state["trials"][str(index)] = finished(index, params, 0.5 + index / 10)
    proposed = propose_wandb(spec, state, 4, 0)
    assert list(proposed) == list(SPACE) and proposed["trainer.max_epochs"] == 3
    assert 1e-5 <= proposed["model.lr"] <= 1e-1 and proposed["model.net.hidden_dim"] in (16, 64, 256)
    assert propose_wandb(spec, state, 4, 0) == proposed
