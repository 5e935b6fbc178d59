"""A sweep spec's parameters as Optuna distributions (experiments/search_space.py): each W&B distribution
drawn as W&B defines it by Optuna's samplers, and what they cannot search refused in one line."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import yaml

from experiments.search_space import optuna_space
from experiments.sweep_spec import load_spec
from validation import ConfigError

optuna = pytest.importorskip("optuna")  # the search extra

PARAMETERS = {
    "model.lr": {"distribution": "log_uniform_values", "min": 1e-4, "max": 1e-1},
    "model.weight_decay": {"distribution": "log_uniform", "min": -9.0, "max": -3.0},  # exponents of e
    "model.net.dropout": {"min": 0.0, "max": 0.5},
    "model.net.width": {"values": [16, 32, 64]},
    "data.batch_size": {"distribution": "q_uniform", "min": 32, "max": 128, "q": 32},
    "trainer.max_epochs": {"value": 10},
    "seed_everything": {"min": 0, "max": 9},
}


def spec_with(tmp_path: Path, parameters: dict) -> Path:
    path = tmp_path / "search.yaml"
    metric = {"name": "val/acc", "goal": "maximize"}
    path.write_text(yaml.safe_dump({"method": "bayes", "metric": metric, "parameters": parameters}))
    return path


def test_each_distribution_becomes_the_optuna_one_that_draws_the_same_values(tmp_path: Path) -> None:
    searched, fixed = optuna_space(load_spec(spec_with(tmp_path, PARAMETERS)))
    assert fixed == {"trainer.max_epochs": 10}
    d = optuna.distributions
    assert searched == {
        "model.lr": d.FloatDistribution(1e-4, 1e-1, log=True),
        "model.weight_decay": d.FloatDistribution(math.exp(-9.0), math.exp(-3.0), log=True),
        "model.net.dropout": d.FloatDistribution(0.0, 0.5),
        "model.net.width": d.CategoricalDistribution([16, 32, 64]),
        "data.batch_size": d.IntDistribution(32, 128, step=32),
        "seed_everything": d.IntDistribution(0, 9),
    }
    # Drawn by the Bayesian sampler, past its random start-up trials, every value stays in its range.
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=0, n_startup_trials=3))
    for _ in range(8):
        trial = study.ask(searched)
        params = trial.params
        assert 1e-4 <= params["model.lr"] <= 1e-1 and params["data.batch_size"] in (32, 64, 96, 128)
        assert params["model.net.width"] in (16, 32, 64) and isinstance(params["seed_everything"], int)
        study.tell(trial, -params["model.lr"])


@pytest.mark.parametrize(
    ("definition", "what"),
    [
        ({"distribution": "normal", "mu": 0.0, "sigma": 1.0}, "the normal distribution"),
        ({"distribution": "q_log_uniform_values", "min": 1, "max": 100, "q": 1}, "the q_log_uniform_values"),
        ({"values": [1, 2], "probabilities": [0.9, 0.1]}, "probabilities for its values"),
        ({"values": [[1, 2], [3]]}, "values that are not numbers, strings or null"),
        ({"distribution": "q_uniform", "min": 0.0, "max": 1.0, "q": 0.3}, "a grid of q=0.3 that does not fit"),
    ],
)
def test_what_optuna_cannot_search_as_wandb_defines_it_is_refused_in_one_line(
    definition: dict, what: str, tmp_path: Path
) -> None:
    spec = load_spec(spec_with(tmp_path, {"model.lr": definition}))
    with pytest.raises(
        ConfigError, match=f"parameter model.lr: a Bayesian search offline \\(Optuna\\) cannot search {what}"
    ) as error:
        optuna_space(spec)
    assert "\n" not in str(error.value) and "W&B online" in str(error.value)
