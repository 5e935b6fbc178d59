"""Bayesian search and early termination against random search, on one search space over the digits CNN.

    python -m benchmarks.search                              # 3 search seeds x 30 trials x 4 searches
    python -m benchmarks.search --seeds 0 --trials 12        # a quicker look

The space is experiments/sweeps/cnn_digits_search.yaml (learning rate, weight decay, dropout, dense width;
8 epochs a trial). For each search seed it runs four sweeps with the real command, `python -m
experiments.sweep <spec> --method ... --seed S --count N`, one trial after another, logging to CSV:

- random: random search, the reference a practitioner tries first;
- bayes: Optuna's TPE proposing each trial from those before it;
- bayes+hyperband: the same, with the spec's early_terminate (Optuna's Hyperband stopping hopeless trials).
- wandb-bayes: W&B's own Bayesian engine (the `sweeps` package, `--engine wandb`), to choose the engine.

It prints, per seed, the best validation accuracy of each search, the trial at which Bayes first reached
random search's best (the claim: within half the trials), and the training steps of each search with and
without early termination (the claim: at least 40% fewer, at the same best accuracy within 0.3 points).
Steps are read from each trial's last checkpoint. Trials run as their own processes, so wall time is the
sum of the trials' start-up and training; the figures compared here do not depend on the machine's speed.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import torch
import yaml

from experiments.hardware import machine_summary

SPACE = Path("experiments/sweeps/cnn_digits_search.yaml")
SEARCHES = {  # name -> (method, early termination, engine)
    "random": ("random", False, "optuna"),
    "bayes": ("bayes", False, "optuna"),
    "bayes+hyperband": ("bayes", True, "optuna"),
    "wandb-bayes": ("bayes", False, "wandb"),
}


def search_spec(search: str, directory: Path) -> Path:
    """The benchmark's spec for one search: the space, its method, early_terminate only where asked."""
    method, pruned, _ = SEARCHES[search]
    spec = yaml.safe_load(SPACE.read_text())
    spec |= {"name": f"search_{search.replace('+', '_').replace('-', '_')}", "method": method, "run_cap": None}
    spec["command"] = [*spec["command"][:-1], "--run.logger", "csv", "${args}"]
    if not pruned:
        spec.pop("early_terminate")
    spec = {key: value for key, value in spec.items() if value is not None}
    path = directory / f"{spec['name']}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def run_search(search: str, seed: int, trials: int, root: Path) -> list[dict[str, Any]]:
    """Run (or resume) one search; its trials in order, each with its metric and training steps."""
    spec = search_spec(search, root)
    seed_root = root / f"seed{seed}"
    command = [sys.executable, "-m", "experiments.sweep", str(spec), "--root", str(seed_root)]
    command += ["--seed", str(seed), "--count", str(trials), "--engine", SEARCHES[search][2]]
    log = root / f"{spec.stem}-seed{seed}.log"
    env = os.environ | {"OMP_NUM_THREADS": "1"}  # several searches at once: one thread each
    with open(log, "a") as output:
        code = subprocess.run(command, stdout=output, stderr=subprocess.STDOUT, env=env).returncode
    if code != 0:
        sys.exit(f"error: {search} seed {seed} failed (exit {code}); see {log}")
    state = json.loads((seed_root / spec.stem / "sweep.json").read_text())
    ordered = [state["trials"][str(index)] for index in range(trials)]
    for trial in ordered:
        checkpoint = Path(trial["run_dir"]) / "checkpoints" / "last.ckpt"
        trial["steps"] = int(torch.load(checkpoint, weights_only=True, map_location="cpu")["global_step"])
    return ordered


def best(trials: list[dict[str, Any]]) -> float:
    return max(t["metric"] for t in trials if t["status"] == "finished" and isinstance(t["metric"], float))


def reached(trials: list[dict[str, Any]], target: float) -> int | None:
    """The first trial (counting from 1) whose finished run scored at least `target`."""
    for position, trial in enumerate(trials, 1):
        if trial["status"] == "finished" and isinstance(trial["metric"], float) and trial["metric"] >= target:
            return position
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="search seeds")
    parser.add_argument("--trials", type=int, default=30, help="trials of each search")
    parser.add_argument("--root", type=Path, default=Path("runs/benchmark_search"), help="where the sweeps run")
    parser.add_argument("--jobs", type=int, default=3, help="searches run at once (each trial on one thread)")
    args = parser.parse_args()
    args.root.mkdir(parents=True, exist_ok=True)
    print(machine_summary())
    print(f"space: {SPACE}, {args.trials} trials a search, seeds {args.seeds}; val/acc, higher is better\n")
    half = args.trials // 2
    rows, within_half, cut, gap = [], [], [], []
    with ThreadPoolExecutor(args.jobs) as pool:  # each search a process of its own; results in order
        runs = {
            (s, seed): pool.submit(run_search, s, seed, args.trials, args.root) for seed in args.seeds for s in SEARCHES
        }
    for seed in args.seeds:
        found = {search: runs[search, seed].result() for search in SEARCHES}
        random_best, bayes = best(found["random"]), found["bayes"]
        at, at_wandb = reached(bayes, random_best), reached(found["wandb-bayes"], random_best)
        steps = {search: sum(t["steps"] for t in trials) for search, trials in found.items()}
        pruned = sum(t["status"] == "pruned" for t in found["bayes+hyperband"])
        within_half.append(at is not None and at <= half)
        cut.append(1 - steps["bayes+hyperband"] / steps["bayes"])
        gap.append(best(found["bayes+hyperband"]) - best(bayes))
        rows.append(
            f"seed {seed}: best val/acc random {random_best:.4f} (trial {reached(found['random'], random_best)}), "
            f"bayes {best(bayes):.4f}, bayes+hyperband {best(found['bayes+hyperband']):.4f}; "
            f"bayes reached random's best at trial {at or 'never'} of {args.trials} "
            f"(W&B's engine: best {best(found['wandb-bayes']):.4f}, reached at {at_wandb or 'never'})\n"
            f"        steps random {steps['random']}, bayes {steps['bayes']}, bayes+hyperband "
            f"{steps['bayes+hyperband']} ({pruned} of {args.trials} pruned): {cut[-1]:.0%} fewer than bayes"
        )
        print(rows[-1], flush=True)
    mean_cut, mean_gap = statistics.mean(cut), statistics.mean(gap)
    search_met = all(within_half)
    pruning_met = mean_cut >= 0.40 and mean_gap >= -0.003
    print(
        f"\nBayes reaches random search's best within {half} of {args.trials} trials: "
        f"{sum(within_half)} of {len(args.seeds)} seeds: {'MET' if search_met else 'NOT MET'}"
    )
    print(
        f"early termination: {mean_cut:.0%} fewer training steps (bar 40%), best val/acc "
        f"{mean_gap * 100:+.2f} points (bar -0.3): {'MET' if pruning_met else 'NOT MET'}"
    )
    sys.exit(0 if search_met and pruning_met else 1)


if __name__ == "__main__":
    main()
