"""A sweep spec's parameters (W&B's definitions) as the search space of an Optuna sampler.

    searched, fixed = optuna_space(spec)
    # searched: {"model.lr": FloatDistribution(1e-4, 1e-1, log=True)}; fixed: {"trainer.max_epochs": 10}

Each W&B distribution becomes the Optuna distribution that draws the same values: `uniform` and
`log_uniform_values` floats (log-scaled), `int_uniform` integers, `q_uniform` floats on a grid of q, `values`
a categorical choice, and `log_uniform` (whose bounds are natural-log exponents) a log-scaled float between
e^min and e^max. A `value` is fixed, not searched. Those an Optuna sampler cannot search as W&B defines them
(normal distributions, log-scaled grids, categorical probabilities) are refused in one line naming the
parameter, never approximated.
"""

from __future__ import annotations

import math
from typing import Any

from experiments.sweep_spec import SweepSpec, distribution
from validation import ConfigError, require

SEARCH = "a Bayesian search offline (Optuna)"


def optuna_space(spec: SweepSpec) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the searched parameters as Optuna distributions, the fixed ones as values), in the spec's order."""
    searched: dict[str, Any] = {}
    fixed: dict[str, Any] = {}
    for key, definition in spec.parameters.items():
        if distribution(definition) == "constant":
            fixed[key] = definition["value"]
        else:
            searched[key] = optuna_distribution(key, definition, spec)
    return searched, fixed


def optuna_distribution(key: str, definition: dict[str, Any], spec: SweepSpec) -> Any:
    """The Optuna distribution of one parameter; ConfigError for one it cannot search as W&B defines it."""
    optuna = require("optuna", SEARCH)
    kind = distribution(definition)
    low, high = definition.get("min"), definition.get("max")
    if kind == "categorical":
        if definition.get("probabilities") is not None:
            raise refused(spec, key, "probabilities for its values", "leave probabilities out")
        values = definition["values"]
        if not all(value is None or isinstance(value, bool | int | float | str) for value in values):
            raise refused(spec, key, "values that are not numbers, strings or null", "give each value as one")
        return optuna.distributions.CategoricalDistribution(values)
    if kind == "int_uniform":
        return optuna.distributions.IntDistribution(int(low), int(high))
    if kind == "uniform":
        return optuna.distributions.FloatDistribution(float(low), float(high))
    if kind == "log_uniform_values":
        return optuna.distributions.FloatDistribution(float(low), float(high), log=True)
    if kind == "log_uniform":  # W&B's bounds are exponents of e
        return optuna.distributions.FloatDistribution(math.exp(low), math.exp(high), log=True)
    if kind == "q_uniform":
        q = definition.get("q", 1)
        steps = (high - low) / q
        if not math.isclose(steps, round(steps)) or steps < 1:
            raise refused(
                spec,
                key,
                f"a grid of q={q} that does not fit min={low} to max={high}",
                "make max - min a multiple of q",
            )
        if isinstance(q, int) and isinstance(low, int) and isinstance(high, int):
            return optuna.distributions.IntDistribution(low, high, step=q)
        return optuna.distributions.FloatDistribution(float(low), float(high), step=float(q))
    raise refused(
        spec, key, f"the {kind} distribution", "use uniform, log_uniform_values, int_uniform, q_uniform or values"
    )


def refused(spec: SweepSpec, key: str, what: str, fix: str) -> ConfigError:
    return ConfigError(
        f"{spec.path}: parameter {key}: {SEARCH} cannot search {what}; {fix}, or run the sweep with W&B online"
    )
