"""Mean ± standard deviation of the test metrics of runs that differ only in their seed."""

from __future__ import annotations

import json
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any

from experiments.sweep_spec import describe

SEED = "seed_everything"


def spread_lines(trials: list[dict[str, Any]]) -> list[str]:
    """For each group of finished trials with the same parameters but their seed (two or more seeds), one
    line per test metric of their summary.json: mean ± sample standard deviation, and each seed's value."""
    groups: dict[str, list[tuple[Any, dict[str, Any]]]] = defaultdict(list)
    for trial in trials:
        params = dict(trial["params"])
        if SEED not in params or not trial.get("run_dir"):
            continue
        seed = params.pop(SEED)
        summary = Path(trial["run_dir"]) / "summary.json"
        if summary.is_file():
            groups[describe(params)].append((seed, json.loads(summary.read_text())))
    lines = []
    for others, runs in groups.items():
        if len(runs) < 2:
            continue
        runs.sort(key=lambda run: run[0])  # seeds are integers: 2 before 10
        seeds = ", ".join(str(seed) for seed, _ in runs)
        lines.append(f"over seeds {seeds}{' with ' + others if others else ''} (mean ± sample std; each seed):")
        names = sorted({k for _, s in runs for k, v in s.items() if k.startswith("test/") and is_number(v)})
        for name in [*names, "wall_time_s"]:
            values = [float(s[name]) for _, s in runs if is_number(s.get(name))]
            if len(values) == len(runs):
                mean, std = statistics.fmean(values), statistics.stdev(values)
                each = ", ".join(f"{v:.4g}" for v in values)
                lines.append(f"  {name:<24} {mean:.4g} ± {std:.2g}  ({each})")
    return lines


def is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)
