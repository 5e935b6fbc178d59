"""Compare runs offline, from their directories alone (whether W&B was offline, online or disabled).

    python -m experiments.compare runs/cnn_digits                  # every run of an experiment
    python -m experiments.compare runs/a/RUN1 runs/a/RUN2 --sort val/loss --output curves.png
    python -m experiments.compare runs/cnn_digits --html report.html   # one page, readable offline

Prints a table of the runs, showing the config keys whose values differ and the final metrics, sorted by
a metric, and writes a PNG of learning curves (one panel per metric, one line per run). With --html it
writes one self-contained page instead (`experiments.html_report`): the table, the curves against step and
wall time, and each run's pictures (confusion matrix, samples: `callbacks.local_report`).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from callbacks.history import read_history
from experiments.command_line import command_parser, ends_cleanly
from experiments.metric_direction import higher_is_better
from experiments.outputs import check_output
from experiments.presets import check_yaml
from experiments.rundir import write_atomic
from validation import ConfigError, first_line


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


def table_cells(runs: list[dict[str, Any]], keys: list[str], metrics: list[str]) -> tuple[list[str], list[list[str]]]:
    """The table's header and rows: the run, the differing config keys, the final metrics."""
    header = ["run", *keys, *metrics]
    rows = [
        [
            run["name"],
            *(format_value(run["config"].get(k)) for k in keys),
            *(format_value(run["summary"].get(m)) for m in metrics),
        ]
        for run in runs
    ]
    return header, rows


def table(runs: list[dict[str, Any]], keys: list[str], metrics: list[str]) -> str:
    header, rows = table_cells(runs, keys, metrics)
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows, strict=True)]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)) for line in [header, *rows]]
    return "\n".join(lines)


def curve_metrics(runs: list[dict[str, Any]]) -> list[str]:
    """The metrics drawn as learning curves: the training loss and the validation metrics."""
    return sorted(
        {m for run in runs for record in run["history"] for m in record if m.startswith(("train/loss", "val/"))}
    )


def points(run: dict[str, Any], metric: str, against: str) -> list[tuple[float, float]]:
    """(x, value) of every record of `metric`: x is the step, or minutes since the run's first record."""
    records = run["history"]
    if against == "step":
        return [(r["step"], r[metric]) for r in records if metric in r and r.get("step") is not None]
    times = [r["wall_time"] for r in records if "wall_time" in r]
    if not times:  # a run from before history.jsonl recorded times
        return []
    return [((r["wall_time"] - times[0]) / 60, r[metric]) for r in records if metric in r and "wall_time" in r]


def curves_figure(runs: list[dict[str, Any]], keys: list[str], names: list[str], against: str = "step") -> Any:
    """One panel per metric, one line per run, against the step or the wall time (minutes)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = min(3, len(names))
    rows = -(-len(names) // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(5 * columns, 3.6 * rows), squeeze=False)
    for axis, metric in zip(axes.flat, names, strict=False):
        for run in runs:
            drawn = points(run, metric, against)
            if drawn:
                label = ", ".join(f"{k.split('.')[-1]}={format_value(run['config'].get(k))}" for k in keys)
                axis.plot(
                    *zip(*drawn, strict=True), label=label or run["name"], marker="." if len(drawn) < 30 else None
                )
        axis.set_title(metric)
        axis.set_xlabel("step" if against == "step" else "wall time (minutes)")
        axis.grid(alpha=0.3)
    for axis in list(axes.flat)[len(names) :]:
        axis.set_visible(False)
    axes.flat[0].legend(fontsize=8)
    figure.tight_layout()
    return figure


def plot(runs: list[dict[str, Any]], keys: list[str], output: Path) -> list[str]:
    """One panel per metric in the histories, one line per run; returns the metrics drawn."""
    import matplotlib.pyplot as plt

    names = curve_metrics(runs)
    if not names:
        return []
    figure = curves_figure(runs, keys, names)
    figure.savefig(output, dpi=110)
    plt.close(figure)
    return names


def html_page(runs: list[dict[str, Any]], keys: list[str], metrics: list[str], notes: list[str]) -> str:
    """The self-contained page of `experiments.html_report`: the table, curves against step and wall time,
    and each run's section."""
    from experiments.html_report import inline_svg, report_page

    names = curve_metrics(runs)
    charts: list[tuple[str, str, str | None]] = []
    for against, heading in (("step", "Learning curves against the step"), ("wall_time", "... against wall time")):
        if not names:
            charts.append((against, heading, "No learning curves: the runs have no history.jsonl."))
        elif not any(points(run, name, against) for run in runs for name in names):
            charts.append((against, heading, "No curves against wall time: the histories hold no times (older runs)."))
        else:
            charts.append((f"curves-{against}", heading, inline_svg(curves_figure(runs, keys, names, against))))
    sections = []
    for run in runs:
        summary = {k: v for k, v in run["summary"].items() if "/" in k and not k.startswith("lr-")}
        line = ", ".join(f"{name} {format_value(value)}" for name, value in sorted(summary.items()))
        sections.append((run["name"], run["dir"], line))
    return report_page(*table_cells(runs, keys, metrics), charts, sections, notes)


def sweep_goal(paths: list[Path], metric: str) -> bool | None:
    """Whether higher `metric` is better, as the spec of a sweep among `paths` states it (its metric's goal);
    None where no sweep optimises that metric."""
    for path in paths:
        try:
            state = mapping(path / "sweep.json", json.loads) if (path / "sweep.json").is_file() else None
        except ConfigError:  # sweep_status names it
            continue
        if state and state.get("metric") == metric and state.get("goal") in ("maximize", "minimize"):
            return state["goal"] == "maximize"
    return None


def sweep_status(path: Path) -> str | None:
    """One line on a sweep directory's trials, failures included (they may have left no run directory)."""
    state_path = path / "sweep.json"
    if not state_path.is_file():
        return None
    try:
        trials = list((mapping(state_path, json.loads) or {}).get("trials", {}).values())
    except ConfigError as error:  # the sweep writes it atomically: damaged by other means
        return f"sweep {path.name}: {error}"
    statuses = ("finished", "pruned", "failed", "interrupted", "running")
    counts = {status: sum(t["status"] == status for t in trials) for status in statuses}
    line = f"sweep {path.name}: " + ", ".join(f"{n} {status}" for status, n in counts.items() if n)
    failures = [f"trial {t['index'] + 1}: {t.get('error')}" for t in trials if t["status"] == "failed"]
    return line + "".join(f"\n  failed {failure}" for failure in failures)


@ends_cleanly
def main(argv: list[str] | None = None) -> int:
    parser = command_parser("compare", __doc__)
    parser.add_argument("paths", nargs="+", type=Path, help="run directories, experiment directories or a sweep")
    parser.add_argument("--sort", help="metric to sort by (default: the first test metric)")
    direction = parser.add_mutually_exclusive_group()
    direction.add_argument(
        "--higher-better",
        action="store_true",
        help="the best runs have the highest --sort metric (default: "
        "the sweep's goal, or what the metric is: accuracy, F1, BLEU, chrF higher; losses, errors lower)",
    )
    direction.add_argument("--lower-better", action="store_true", help="the best runs have the lowest --sort metric")
    parser.add_argument(
        "--output", type=Path, help="where to write the PNG of learning curves (default: compare.png, none with --html)"
    )
    parser.add_argument(
        "--html", type=Path, help="also write one self-contained page: the table, curves, each run's pictures"
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --html page")
    args = parser.parse_args(argv)
    missing = [str(p) for p in args.paths if not p.exists()]
    if missing:
        raise ConfigError(f"{', '.join(missing)} not found; give run or experiment directories")
    if args.html is not None:
        check_output(args.html, args.overwrite, given=True, option="--html")
    output = args.output or (Path("compare.png") if args.html is None else None)
    run_dirs = find_runs(args.paths)
    statuses = list(filter(None, map(sweep_status, args.paths)))
    if not run_dirs:
        where = ", ".join(map(str, args.paths))
        if statuses:  # a sweep whose trials failed before they made a run: what failed is the answer
            print("\n".join(statuses))
            print(f"error: no runs to compare under {where}: no trial made a run (see above)", file=sys.stderr)
            return 1
        raise ConfigError(f"no runs (directories with config.yaml) under {where}")
    runs, damaged = load_runs(run_dirs)
    if not runs:
        print(f"error: no run could be read: {'; '.join(damaged)}", file=sys.stderr)
        return 1
    for line in damaged:
        print(f"warning: left out {line}", file=sys.stderr)
    metrics = final_metrics(runs)
    sort = args.sort or default_sort(metrics)
    if sort and sort not in metrics:
        raise ConfigError(f"no run has the metric {sort}; choose one of {', '.join(metrics)}")
    higher = True
    if sort:
        stated = True if args.higher_better else False if args.lower_better else sweep_goal(args.paths, sort)
        higher = higher_is_better(sort, stated)
        missing_value = float("-inf") if higher else float("inf")
        runs.sort(
            key=lambda r: r["summary"].get(sort) if r["summary"].get(sort) is not None else missing_value,
            reverse=higher,
        )
    keys = differing_keys(runs)
    for status in statuses:
        print(status)
    print(table(runs, keys, metrics))
    if output is not None:
        drawn = plot(runs, keys, output)
        if drawn:
            print(f"learning curves ({', '.join(drawn)}): {output.absolute()}")
        else:
            print("no learning curves: the runs have no history.jsonl")
    if args.html is not None:
        order = f"sorted by {sort}, {'highest' if higher else 'lowest'} first" if sort else "in the order found"
        notes = [order, *statuses]
        notes += [f"left out {line}" for line in damaged]
        try:
            write_atomic(args.html, html_page(runs, keys, metrics, notes))
        except OSError as error:
            print(f"error: --html {args.html}: {error.strerror or error}", file=sys.stderr)
            return 1
        print(f"report: {args.html.absolute()}")
    if damaged:
        print(f"compared {len(runs)} of {len(run_dirs)} runs; {len(damaged)} damaged, left out (see the warnings)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
