"""Compare runs offline, from their directories alone (whether W&B was offline, online or disabled).

    python -m experiments.compare runs/cnn_digits                  # every run of an experiment
    python -m experiments.compare runs/a/RUN1 runs/a/RUN2 --sort val/loss --output curves.png

Prints a table of the runs, showing the config keys whose values differ and the final metrics, sorted by
a metric, and writes a PNG of learning curves (one panel per metric, one line per run).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from callbacks.history import read_history
from experiments.presets import check_yaml
from experiments.tracking import first_line
from validation import ConfigError

HIGHER_IS_BETTER = ("acc", "f1", "exact_match")


def find_runs(paths: list[Path]) -> list[Path]:
    """Run directories (holding config.yaml) at, or up to three levels below, each path."""
    runs: list[Path] = []
    for path in paths:
        if (path / "config.yaml").is_file():
            runs.append(path)
            continue
        for depth in ("*", "*/*", "*/*/*"):
            found = sorted(p.parent for p in path.glob(f"{depth}/config.yaml"))
            if found:
                runs += found
                break
    return list(dict.fromkeys(runs))


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """{"model": {"init_args": {"lr": 0.1}}} -> {"model.lr": 0.1} (init_args dropped for brevity)."""
    if not isinstance(tree, dict):
        return {prefix: tree}
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        name = prefix if key == "init_args" else f"{prefix}.{key}" if prefix else str(key)
        flat.update(flatten(value, name))
    return flat


def load_run(run_dir: Path) -> dict[str, Any]:
    """A run's config, summary and history; ConfigError naming the file, if one of them is damaged."""
    summary_path = run_dir / "summary.json"
    check_yaml(run_dir / "config.yaml")  # a syntax error, named with its line
    config = flatten(mapping(run_dir / "config.yaml", yaml.safe_load) or {})
    summary = mapping(summary_path, json.loads) if summary_path.is_file() else {}
    name = f"{run_dir.parent.name}/{run_dir.name}"
    return {"dir": run_dir, "name": name, "config": config, "summary": summary, "history": read_history(run_dir)}


def mapping(path: Path, parse: Callable[[str], Any]) -> dict[str, Any] | None:
    """A file parsed as a mapping (None when empty); ConfigError naming it if it is not one."""
    try:
        value = parse(path.read_text())
    except ValueError as error:  # json.JSONDecodeError, UnicodeDecodeError
        raise ConfigError(f"{path} is damaged ({first_line(error)})") from None
    if value is not None and not isinstance(value, dict):
        raise ConfigError(f"{path} is damaged (a {type(value).__name__}, not a mapping)")
    return value


def load_runs(run_dirs: list[Path]) -> tuple[list[dict[str, Any]], list[str]]:
    """The runs that can be read, and one line on each that cannot."""
    runs, damaged = [], []
    for run_dir in run_dirs:
        try:
            runs.append(load_run(run_dir))
        except (ConfigError, OSError) as error:  # OSError: unreadable
            damaged.append(f"{run_dir.parent.name}/{run_dir.name}: {error}")
    return runs, damaged


def differing_keys(runs: list[dict[str, Any]]) -> list[str]:
    keys = sorted({key for run in runs for key in run["config"]})
    ignored = ("run.name", "run.tags", "run.root")
    return [k for k in keys if k not in ignored and len({repr(run["config"].get(k)) for run in runs}) > 1]


def final_metrics(runs: list[dict[str, Any]]) -> list[str]:
    names = {name for run in runs for name in run["summary"] if "/" in name and not name.startswith("lr-")}
    return sorted(n for n in names if n.startswith("test/") or n.endswith("_best"))


def default_sort(metrics: list[str]) -> str | None:
    for prefix in ("test/", ""):
        for name in metrics:
            if name.startswith(prefix):
                return name
    return None


def format_value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "-" if value is None else str(value)


def table(runs: list[dict[str, Any]], keys: list[str], metrics: list[str]) -> str:
    header = ["run", *keys, *metrics]
    rows = [
        [
            run["name"],
            *(format_value(run["config"].get(k)) for k in keys),
            *(format_value(run["summary"].get(m)) for m in metrics),
        ]
        for run in runs
    ]
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows, strict=True)]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)) for line in [header, *rows]]
    return "\n".join(lines)


def plot(runs: list[dict[str, Any]], keys: list[str], output: Path) -> list[str]:
    """One panel per metric in the histories, one line per run; returns the metrics drawn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = sorted(
        {m for run in runs for record in run["history"] for m in record if m.startswith(("train/loss", "val/"))}
    )
    if not names:
        return []
    columns = min(3, len(names))
    rows = -(-len(names) // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(5 * columns, 3.6 * rows), squeeze=False)
    for axis, metric in zip(axes.flat, names, strict=False):
        for run in runs:
            points = [(r["step"], r[metric]) for r in run["history"] if metric in r and r.get("step") is not None]
            if points:
                label = ", ".join(f"{k.split('.')[-1]}={format_value(run['config'].get(k))}" for k in keys)
                axis.plot(
                    *zip(*points, strict=True), label=label or run["name"], marker="." if len(points) < 30 else None
                )
        axis.set_title(metric)
        axis.set_xlabel("step")
        axis.grid(alpha=0.3)
    for axis in list(axes.flat)[len(names) :]:
        axis.set_visible(False)
    axes.flat[0].legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(output, dpi=110)
    plt.close(figure)
    return names


def sweep_status(path: Path) -> str | None:
    """One line on a sweep directory's trials, failures included (they may have left no run directory)."""
    state_path = path / "sweep.json"
    if not state_path.is_file():
        return None
    try:
        trials = list((mapping(state_path, json.loads) or {}).get("trials", {}).values())
    except ConfigError as error:  # the sweep writes it atomically: damaged by other means
        return f"sweep {path.name}: {error}"
    statuses = ("finished", "failed", "interrupted", "running")
    counts = {status: sum(t["status"] == status for t in trials) for status in statuses}
    line = f"sweep {path.name}: " + ", ".join(f"{n} {status}" for status, n in counts.items() if n)
    failures = [f"trial {t['index'] + 1}: {t.get('error')}" for t in trials if t["status"] == "failed"]
    return line + "".join(f"\n  failed {failure}" for failure in failures)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m experiments.compare", description=__doc__.split("\n\n")[0])
    parser.add_argument("paths", nargs="+", type=Path, help="run directories, experiment directories or a sweep")
    parser.add_argument("--sort", help="metric to sort by (default: the first test metric)")
    parser.add_argument("--output", type=Path, default=Path("compare.png"), help="where to write the PNG")
    args = parser.parse_args(argv)
    missing = [str(p) for p in args.paths if not p.exists()]
    if missing:
        print(f"error: {', '.join(missing)} not found; give run or experiment directories", file=sys.stderr)
        return 2
    run_dirs = find_runs(args.paths)
    if not run_dirs:
        print(f"error: no runs (directories with config.yaml) under {', '.join(map(str, args.paths))}", file=sys.stderr)
        return 2
    runs, damaged = load_runs(run_dirs)
    if not runs:
        print(f"error: no run could be read: {'; '.join(damaged)}", file=sys.stderr)
        return 1
    for line in damaged:
        print(f"warning: left out {line}", file=sys.stderr)
    metrics = final_metrics(runs)
    sort = args.sort or default_sort(metrics)
    if sort and sort not in metrics:
        print(f"error: no run has the metric {sort}; choose one of {', '.join(metrics)}", file=sys.stderr)
        return 2
    if sort:
        higher = any(word in sort for word in HIGHER_IS_BETTER)
        missing_value = float("-inf") if higher else float("inf")
        runs.sort(
            key=lambda r: r["summary"].get(sort) if r["summary"].get(sort) is not None else missing_value,
            reverse=higher,
        )
    keys = differing_keys(runs)
    for status in filter(None, map(sweep_status, args.paths)):
        print(status)
    print(table(runs, keys, metrics))
    drawn = plot(runs, keys, args.output)
    if drawn:
        print(f"learning curves ({', '.join(drawn)}): {args.output.absolute()}")
    else:
        print("no learning curves: the runs have no history.jsonl")
    if damaged:
        print(f"compared {len(runs)} of {len(run_dirs)} runs; {len(damaged)} damaged, left out (see the warnings)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
