"""Sweep specs in W&B's format, and the trials they plan when run locally (grid or random search).

    name: cnn_digits_lr                      # optional; default: the file's name
    command: [-m, experiments.run, --config, cnn_digits, "${args}"]   # W&B writes ${env} ${interpreter} first
    method: grid                             # grid | random | bayes (bayes needs W&B online)
    metric: {name: val/acc, goal: maximize}
    run_cap: 20                              # optional: most trials
    parameters:
      model.lr: {values: [0.01, 0.003]}
      model.net.dropout: {min: 0.0, max: 0.5}    # random search only
      trainer.max_epochs: {value: 5}

The arguments of `command` after `experiments.run` are the base of every trial; each parameter becomes
`--<key>=<value>`, as W&B's agent writes `${args}`. Nested parameters (`model: {parameters: {lr: ...}}`)
are flattened to dotted keys.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from experiments.presets import check_yaml
from validation import ConfigError, check_name

TOP_LEVEL_KEYS = {
    "name",
    "description",
    "program",
    "command",
    "method",
    "metric",
    "parameters",
    "early_terminate",
    "run_cap",
    "project",
    "entity",
}
METHODS = ("grid", "random", "bayes")
DISTRIBUTIONS = (
    "constant",
    "categorical",
    "uniform",
    "int_uniform",
    "q_uniform",
    "log_uniform",
    "log_uniform_values",
    "q_log_uniform_values",
    "normal",
    "q_normal",
    "log_normal",
    "q_log_normal",
)
RUN_MODULE = "experiments.run"


@dataclass
class SweepSpec:
    path: Path
    raw: dict[str, Any]
    name: str
    method: str
    metric: str | None
    maximize: bool
    parameters: dict[str, dict[str, Any]]  # dotted key -> W&B parameter definition
    base_args: list[str]  # run arguments shared by all trials
    run_cap: int | None

    @property
    def fingerprint(self) -> str:
        """Identifies what the trials are: a resumed sweep must plan the same ones."""
        planned = {"method": self.method, "parameters": self.parameters, "base_args": self.base_args}
        return hashlib.sha256(json.dumps(planned, sort_keys=True, default=str).encode()).hexdigest()[:16]


def load_spec(path: Path) -> SweepSpec:
    if not path.is_file():
        raise ConfigError(f"sweep spec {path} not found; give the path of a YAML file in W&B's sweep format")
    check_yaml(path)
    return parse_spec(yaml.safe_load(path.read_text()), path)


def parse_spec(raw: Any, path: Path) -> SweepSpec:
    """A checked spec from its parsed YAML (`path` names it in messages)."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: a sweep spec is a mapping with method, metric and parameters")
    unknown = sorted(set(raw) - TOP_LEVEL_KEYS)
    if unknown:
        known = ", ".join(sorted(TOP_LEVEL_KEYS))
        raise ConfigError(f"{path}: unknown key {', '.join(unknown)}; a W&B sweep spec has {known}")
    method = raw.get("method")
    if method not in METHODS:
        raise ConfigError(f"{path}: method must be one of {', '.join(METHODS)}, got {method!r}")
    metric = raw.get("metric") or {}
    if not isinstance(metric, dict) or (metric and "name" not in metric):
        raise ConfigError(f"{path}: metric must be a mapping like {{name: val/acc, goal: maximize}}")
    goal = metric.get("goal", "minimize")
    if goal not in ("minimize", "maximize"):
        raise ConfigError(f"{path}: metric goal must be minimize or maximize, got {goal!r}")
    if method == "bayes" and not metric:
        raise ConfigError(f"{path}: method bayes needs a metric to optimise: metric: {{name: ..., goal: ...}}")
    parameters = flatten_parameters(raw.get("parameters"), path)
    for key, definition in parameters.items():
        check_parameter(key, definition, method, path)
    run_cap = raw.get("run_cap")
    if run_cap is not None and (not isinstance(run_cap, int) or run_cap < 1):
        raise ConfigError(f"{path}: run_cap must be a positive integer, got {run_cap!r}")
    return SweepSpec(
        path=path,
        raw=raw,
        name=check_name(f"{path}: name", str(raw.get("name") or path.stem)),
        method=method,
        metric=metric.get("name"),
        maximize=goal == "maximize",
        parameters=parameters,
        base_args=base_args(raw.get("command"), path),
        run_cap=run_cap,
    )


def flatten_parameters(tree: Any, path: Path, prefix: str = "") -> dict[str, dict[str, Any]]:
    if not isinstance(tree, dict) or not tree:
        where = f"parameters.{prefix.rstrip('.')}" if prefix else "parameters"
        raise ConfigError(f"{path}: {where} must be a non-empty mapping of option names to definitions")
    flat: dict[str, dict[str, Any]] = {}
    for key, definition in tree.items():
        name = f"{prefix}{key}"
        if not isinstance(definition, dict):
            raise ConfigError(f"{path}: parameter {name} must be a mapping like {{values: [...]}} or {{value: ...}}")
        if "parameters" in definition:  # W&B's nested form
            flat.update(flatten_parameters(definition["parameters"], path, f"{name}."))
        else:
            flat[name] = definition
    return flat


def distribution(definition: dict[str, Any]) -> str:
    """The W&B distribution of a parameter, inferred as W&B does when not given."""
    if "distribution" in definition:
        return str(definition["distribution"])
    if "value" in definition:
        return "constant"
    if "values" in definition:
        return "categorical"
    if "min" in definition and "max" in definition:
        both_int = all(isinstance(definition[k], int) and not isinstance(definition[k], bool) for k in ("min", "max"))
        return "int_uniform" if both_int else "uniform"
    if "mu" in definition or "sigma" in definition:
        return "normal"
    return "unknown"


def check_parameter(key: str, definition: dict[str, Any], method: str, path: Path) -> None:
    kind = distribution(definition)
    where = f"{path}: parameter {key}"
    if kind not in DISTRIBUTIONS:
        raise ConfigError(
            f"{where}: give value, values, or min/max (distribution {kind!r} is not one of {', '.join(DISTRIBUTIONS)})"
        )
    if kind == "categorical":
        values = definition.get("values")
        if not isinstance(values, list) or not values:
            raise ConfigError(f"{where}: values must be a non-empty list")
        probabilities = definition.get("probabilities")
        if probabilities is not None and (len(probabilities) != len(values) or not math.isclose(sum(probabilities), 1)):
            raise ConfigError(f"{where}: probabilities must give one number per value and sum to 1")
    if kind in ("uniform", "int_uniform", "q_uniform", "log_uniform", "log_uniform_values", "q_log_uniform_values"):
        low, high = definition.get("min"), definition.get("max")
        if not isinstance(low, int | float) or not isinstance(high, int | float) or low >= high:
            raise ConfigError(f"{where}: needs numbers min < max, got min={low!r} max={high!r}")
        if kind.endswith("log_uniform_values") and low <= 0:
            raise ConfigError(f"{where}: {kind} needs min > 0, got {low}")
    if method == "grid" and kind not in ("constant", "categorical"):
        raise ConfigError(f"{where}: grid search needs value or values, not a {kind} distribution; use method: random")


def base_args(command: Any, path: Path) -> list[str]:
    """The run arguments in `command` after `-m experiments.run`, without W&B's ${...} macros."""
    if command is None:
        return []
    if not isinstance(command, list) or RUN_MODULE not in command or "${args}" not in command:
        raise ConfigError(
            f"{path}: command must be a list that runs {RUN_MODULE} and passes ${{args}}, e.g. "
            f"[${{env}}, ${{interpreter}}, -m, {RUN_MODULE}, --config, cnn_digits, ${{args}}]"
        )
    after = command[command.index(RUN_MODULE) + 1 :]
    return [str(arg) for arg in after if not (str(arg).startswith("${") and str(arg).endswith("}"))]


def sample(definition: dict[str, Any], rng: random.Random) -> Any:
    """One value of a parameter, following W&B's definitions of its distributions."""
    kind = distribution(definition)
    d = definition
    q = d.get("q", 1)
    if kind == "constant":
        return d["value"]
    if kind == "categorical":
        return rng.choices(d["values"], weights=d.get("probabilities"))[0]
    if kind == "int_uniform":
        return rng.randint(d["min"], d["max"])
    if kind in ("uniform", "q_uniform"):
        value = rng.uniform(d["min"], d["max"])
    elif kind == "log_uniform":  # min and max are exponents (natural log)
        value = math.exp(rng.uniform(d["min"], d["max"]))
    elif kind in ("log_uniform_values", "q_log_uniform_values"):
        value = math.exp(rng.uniform(math.log(d["min"]), math.log(d["max"])))
    elif kind in ("normal", "q_normal"):
        value = rng.gauss(d.get("mu", 0.0), d.get("sigma", 1.0))
    else:  # log_normal, q_log_normal
        value = math.exp(rng.gauss(d.get("mu", 0.0), d.get("sigma", 1.0)))
    if kind.startswith("q_"):
        value = round(value / q) * q
        return int(value) if isinstance(q, int) else value
    return value


def plan_trials(spec: SweepSpec, count: int | None = None, seed: int = 0) -> list[dict[str, Any]]:
    """The parameters of every trial, in order: at most `count` (default: the spec's run_cap) of them.

    The same spec and seed always give the same list, and a larger count extends it, so a sweep can be
    resumed or lengthened.
    """
    keys = list(spec.parameters)
    total = count or spec.run_cap
    if spec.method == "grid":
        choices = [
            [d["value"]] if distribution(d) == "constant" else list(d["values"]) for d in spec.parameters.values()
        ]
        trials = [dict(zip(keys, combination, strict=True)) for combination in itertools.product(*choices)]
        return trials[:total]
    if total is None:
        raise ConfigError(f"{spec.path}: random search needs a number of trials: run_cap in the spec or --count N")
    rng = random.Random(seed)
    return [{key: sample(spec.parameters[key], rng) for key in keys} for _ in range(total)]


def trial_args(spec: SweepSpec, params: dict[str, Any]) -> list[str]:
    """The run's arguments for one trial: the base, then `--key=value` as W&B's agent writes ${args}."""
    return [*spec.base_args, *(f"--{key}={format_value(value)}" for key, value in params.items())]


def describe(params: dict[str, Any]) -> str:
    """A trial's parameters in one line: `model.lr=0.01 model.net.dropout=0.3`."""
    return " ".join(f"{key}={value}" for key, value in params.items())


def format_value(value: Any) -> str:
    if value is None:
        return "null"  # str(None) would reach the parser as the string "None"
    return str(value)
