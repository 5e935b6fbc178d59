"""An offline sweep's search on Optuna: Bayesian proposals (TPE) and early termination (Hyperband).

    params = propose(spec, state, index, seed, total)   # method: bayes, the next trial's parameters
    prune = report(directory, index, step, value)   # in a trial, after each validation: stop it?

Optuna's sampler and pruner are asked of a study rebuilt from sweep.json, the sweep's one record of its
trials (parameters, status, metric, the metric after each validation, and what the pruner keeps of a trial),
rather than of a second store beside it: the record is what every worker reads and writes under its lock, on
any host and shared file system, so the study each one sees is always the sweep's.

W&B's `early_terminate: {type: hyperband, min_iter: 3, eta: 3}` becomes Optuna's HyperbandPruner: a trial's
iterations are its validations (as W&B counts the logged metric), `min_iter` the first rung, `eta` the
reduction factor and `max_iter` the most iterations (by default, those of the first trial that finishes).
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Any

from experiments.search_space import SEARCH, optuna_space
from experiments.sweep_record import locked_record, no_record
from experiments.sweep_spec import SweepSpec
from validation import ConfigError, require

HYPERBAND_KEYS = {"type", "min_iter", "max_iter", "eta"}
STARTUP_SHARE, MOST_STARTUP_TRIALS = 6, 10  # random trials before TPE's model guides: a sixth, at most its default


def startup_trials(total: int) -> int:
    """How many of a search's `total` trials are drawn at random before TPE's model guides the rest: a sixth of
    them (5 of 30), at least 3, at most TPE's default of 10, so that a short search is mostly guided."""
    return min(MOST_STARTUP_TRIALS, max(3, total // STARTUP_SHARE))


def hyperband_settings(spec: SweepSpec) -> dict[str, Any] | None:
    """The HyperbandPruner's arguments for the spec's early_terminate (None without one); what it cannot
    honour as W&B defines it is refused in one line."""
    early = spec.raw.get("early_terminate")
    if not early:
        return None
    where = f"{spec.path}: early_terminate"
    if not isinstance(early, dict) or early.get("type") != "hyperband":
        raise ConfigError(f"{where} must be {{type: hyperband, min_iter: N}} (the one type W&B defines)")
    unknown = sorted(set(early) - HYPERBAND_KEYS)
    if unknown:
        raise ConfigError(
            f"{where}: {', '.join(unknown)} cannot be honoured offline; give min_iter (and max_iter, eta) instead"
        )
    if not spec.metric:
        raise ConfigError(f"{where} needs a metric to compare the trials on: metric: {{name: ..., goal: ...}}")
    settings: dict[str, Any] = {"min_resource": early.get("min_iter", 1), "reduction_factor": early.get("eta", 3)}
    settings["max_resource"] = early.get("max_iter", "auto")
    for key, value in (("min_iter", settings["min_resource"]), ("eta", settings["reduction_factor"])):
        if not isinstance(value, int) or isinstance(value, bool) or value < (1 if key == "min_iter" else 2):
            raise ConfigError(f"{where}: {key} must be an integer of at least {1 if key == 'min_iter' else 2}")
    most = settings["max_resource"]
    if most != "auto" and (not isinstance(most, int) or most <= settings["min_resource"]):
        raise ConfigError(f"{where}: max_iter must be an integer above min_iter, got {most!r}")
    return settings


def propose(spec: SweepSpec, state: dict[str, Any], index: int, seed: int, total: int) -> dict[str, Any]:
    """The parameters of trial `index` of a Bayesian search, from TPE on the trials so far (those still
    running count as a guess, so that workers do not all try the same point)."""
    optuna = require("optuna", SEARCH)
    searched, fixed = optuna_space(spec)
    sampler = optuna.samplers.TPESampler(
        seed=seed * 1_000_003 + index,  # each proposal its own seed: the same history gives the same proposal
        n_startup_trials=startup_trials(total),
        multivariate=True,
        constant_liar=True,
    )
    study = rebuilt_study(state, searched, sampler=sampler)
    trial = study.ask(fixed_distributions=searched)
    if trial.number != index:
        raise RuntimeError(f"sweep.json holds {trial.number} trials, not {index}: proposals out of order")
    return {key: trial.params[key] if key in trial.params else fixed[key] for key in spec.parameters}


def propose_wandb(spec: SweepSpec, state: dict[str, Any], index: int, seed: int) -> dict[str, Any]:
    """The parameters of trial `index` from W&B's own Bayesian engine (the `sweeps` package that W&B's server
    runs: a Gaussian process over the trials so far), offline: `--engine wandb`."""
    with warnings.catch_warnings():  # its pydantic models warn of renamed settings as they are imported
        warnings.simplefilter("ignore", UserWarning)
        sweeps = require("sweeps", "W&B's sweep engine offline (--engine wandb)")
    import numpy as np

    RunState, SweepRun = sweeps.RunState, sweeps.SweepRun

    states = {"finished": RunState.finished, "pruned": RunState.finished, "failed": RunState.failed}
    runs = []
    for key, record in sorted(state["trials"].items(), key=lambda item: int(item[0])):
        metric = record.get("metric")
        scored = isinstance(metric, int | float) and math.isfinite(metric)
        runs.append(
            SweepRun(
                name=f"trial-{key}",
                state=states.get(record["status"], RunState.running),
                config={name: {"value": value} for name, value in record["params"].items()},
                summary_metrics={spec.metric: metric} if scored else {},
            )
        )
    config = {
        "method": "bayes",
        "metric": {"name": spec.metric, "goal": "maximize" if spec.maximize else "minimize"},
        "parameters": spec.parameters,
    }
    np.random.seed((seed * 1_000_003 + index) % 2**32)  # the engine draws from numpy's global generator
    with warnings.catch_warnings():  # scikit-learn's fit of the Gaussian process warns of its bounds
        warnings.simplefilter("ignore")
        proposed = sweeps.next_run(config, runs)
    return {name: proposed.config[name]["value"] for name in spec.parameters}


def report(directory: Path, index: int, value: float) -> bool:
    """Record a trial's metric after its latest validation and ask Hyperband whether to stop it there; a
    stopped trial is marked pruned (at that iteration)."""
    optuna = require("optuna", "early_terminate offline (Optuna's Hyperband)")
    with locked_record(directory, no_record) as state:
        trial = state["trials"][str(index)]
        intermediate = trial.setdefault("intermediate", {})
        step = len(intermediate) + 1  # W&B's iterations: how many times the metric was logged
        intermediate[str(step)] = value if math.isfinite(value) else None
        study = rebuilt_study(state, {}, pruner=optuna.pruners.HyperbandPruner(**state["early_terminate"]))
        frozen = study.trials[index]
        prune = study.pruner.prune(study, frozen)
        kept = study._storage.get_trial(frozen._trial_id).system_attrs  # the rungs it passed (no public reader)
        trial["optuna_system_attrs"] = kept
        if prune:
            trial["pruned_at"] = step
    return prune


def rebuilt_study(state: dict[str, Any], distributions: dict[str, Any], sampler: Any = None, pruner: Any = None) -> Any:
    """An in-memory Optuna study holding the sweep's trials as Optuna trial number = trial index, their
    parameters (those in `distributions`) and states: finished as complete, pruned, running or interrupted
    as running (what is missing or failed as failed)."""
    optuna = require("optuna", SEARCH)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    direction = "maximize" if state["goal"] == "maximize" else "minimize"
    study = optuna.create_study(study_name=state["name"], direction=direction, sampler=sampler, pruner=pruner)
    trials = state["trials"]
    for index in range(1 + max((int(key) for key in trials), default=-1)):
        study.add_trial(frozen_trial(trials.get(str(index)), distributions))
    return study


def frozen_trial(record: dict[str, Any] | None, distributions: dict[str, Any]) -> Any:
    optuna = require("optuna", SEARCH)
    TrialState, create_trial = optuna.trial.TrialState, optuna.trial.create_trial

    if record is None:
        return create_trial(state=TrialState.FAIL)
    metric, status = record.get("metric"), record["status"]
    complete = status == "finished" and isinstance(metric, int | float) and math.isfinite(metric)
    states = {"pruned": TrialState.PRUNED, "running": TrialState.RUNNING, "interrupted": TrialState.RUNNING}
    params = {key: value for key, value in record["params"].items() if key in distributions}
    return create_trial(
        state=TrialState.COMPLETE if complete else states.get(status, TrialState.FAIL),
        value=metric if complete else None,
        params=params,
        distributions={key: distributions[key] for key in params},
        intermediate_values={
            int(step): value for step, value in record.get("intermediate", {}).items() if value is not None
        },
        system_attrs=record.get("optuna_system_attrs", {}),
    )


def check_honoured(spec: SweepSpec) -> None:
    """Refuse, before any trial, what an offline sweep of this spec could not honour."""
    hyperband_settings(spec)
    if spec.method == "bayes":
        if not spec.metric:
            raise ConfigError(f"{spec.path}: method bayes needs a metric to optimise: metric: {{name: ..., goal: ...}}")
        optuna_space(spec)
