"""`--cluster slurm`: a run or a sweep submitted to SLURM with sbatch, from the command it would run here.

    python -m experiments.run --config cnn_fashion_mnist --cluster slurm --cluster.gpus 4 --cluster.time 2:00:00
    python -m experiments.sweep spec.yaml --cluster slurm --workers 8 --cluster.partition gpu

A run becomes one job of experiments/cluster/train.sbatch (a DDP task per GPU on each node); a sweep becomes a
job array of experiments/cluster/sweep.sbatch, one sweep worker per task, sharing the sweep's record on the
cluster's file system. Both templates requeue on preemption and before the time limit; a requeued run resumes
from its last checkpoint, a requeued worker resumes its trial. The job's output goes beside the runs.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from experiments.presets import expand_configs
from experiments.resume import command_digest, resumed_config
from validation import ConfigError

TEMPLATES = Path(__file__).parent / "cluster"


@dataclass
class ClusterOptions:
    partition: str | None = None
    time: str | None = None  # sbatch's --time: minutes, or [days-]hours:minutes:seconds
    nodes: int = 1
    gpus: int = 1  # per node; 0 for CPUs only
    cpus: int | None = None  # per task (template: 8)


def cluster_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    parser.add_argument("--cluster", choices=("slurm",), help="submit the command to SLURM (sbatch) instead")
    parser.add_argument("--cluster.partition", dest="partition", help="with --cluster slurm: sbatch --partition")
    parser.add_argument("--cluster.time", dest="time", help="with --cluster slurm: sbatch --time, e.g. 4:00:00")
    parser.add_argument("--cluster.nodes", dest="nodes", type=int, default=1, help="nodes a job (default 1)")
    parser.add_argument("--cluster.gpus", dest="gpus", type=int, default=1, help="GPUs a node (default 1; 0: CPUs)")
    parser.add_argument("--cluster.cpus", dest="cpus", type=int, help="CPUs a task (default: the template's 8)")
    return parser


def split_cluster_args(args: list[str]) -> tuple[ClusterOptions | None, list[str]]:
    """(the --cluster options, or None when there are none; the other arguments, in order)."""
    if not any(arg == "--cluster" or arg.startswith(("--cluster=", "--cluster.")) for arg in args):
        return None, args
    parser = cluster_parser()
    parser.error = lambda message: (_ for _ in ()).throw(ConfigError(f"{message} (--cluster options)"))  # type: ignore[method-assign]
    known, rest = parser.parse_known_args(args)
    if known.cluster is None:
        raise ConfigError("--cluster.* options need --cluster slurm")
    options = ClusterOptions(known.partition, known.time, known.nodes, known.gpus, known.cpus)
    for name in ("nodes", "gpus", "cpus"):
        value = getattr(options, name)
        if value is not None and value < (0 if name == "gpus" else 1):
            raise ConfigError(f"--cluster.{name} must be at least {0 if name == 'gpus' else 1}, got {value}")
    return options, rest


def check_slurm() -> str:
    """sbatch's path; ConfigError when this machine cannot submit to SLURM."""
    sbatch = shutil.which("sbatch")
    if sbatch is None:
        raise ConfigError(
            "--cluster slurm needs SLURM's sbatch, which is not on PATH here; run the command on the cluster's "
            "login node, or leave out --cluster to train here"
        )
    return sbatch


def sbatch(options: ClusterOptions, template: Path, args: list[str], output: Path, extra: list[str]) -> str:
    """Submit `template` with `args` (for the job's command); the job id."""
    output.parent.mkdir(parents=True, exist_ok=True)
    command = [check_slurm(), "--parsable", f"--chdir={Path.cwd()}", f"--output={output}", *extra]
    command += [f"--nodes={options.nodes}", f"--gpus-per-node={options.gpus}"]
    command += [f"--partition={options.partition}"] * bool(options.partition)
    command += [f"--time={options.time}"] * bool(options.time)
    command += [f"--cpus-per-task={options.cpus}"] * bool(options.cpus)
    # The job's environment is this one (sbatch's --export=ALL), with this interpreter, less this process's
    # W&B service address (the job starts its own).
    env = {key: value for key, value in os.environ.items() if key != "WANDB_SERVICE"}
    env["FIRSTLIGHT_PYTHON"] = sys.executable
    result = subprocess.run([*command, str(template), *args], capture_output=True, text=True, env=env)
    if result.returncode != 0:
        reason = (result.stderr.strip().splitlines() or ["no message"])[-1].removeprefix("sbatch: error: ")
        raise ConfigError(f"SLURM refused the job: {reason}")
    return result.stdout.strip().split(";")[0]  # "<job id>[;<cluster>]"


def submit_run(options: ClusterOptions, args: list[str], printed_config: Callable[[list[str]], dict[str, Any]]) -> int:
    """Submit `python -m experiments.run <args>` as a job of train.sbatch, once the run accepts the arguments
    (`printed_config`, the config it would train with); prints the job id and the run's directory."""
    check_slurm()  # before anything else: without SLURM, nothing to check the arguments for
    tasks = max(options.gpus, 1)  # one DDP process per GPU; one on CPUs
    # what the job runs: train.sbatch puts the job's shape before the arguments
    job_args = ["--trainer.num_nodes", str(options.nodes), "--trainer.devices", str(tasks), "--trainer.strategy", "ddp"]
    expanded, preset = expand_configs(resumed_config([*job_args, *args]))
    run = printed_config([*job_args, *args])["run"]
    experiment_dir = Path(run["root"]) / (run["experiment"] or preset)
    output = experiment_dir / "slurm-%j.out"
    job = sbatch(options, TEMPLATES / "train.sbatch", args, output, [f"--ntasks-per-node={tasks}"])
    if run["resume"]:
        where = f"resumes {run['resume']}"
    else:  # the id the run takes under SLURM (`resume.choose_run`), which a requeued job finds again
        where = f"run directory: {experiment_dir / f'slurm-{job}-{command_digest(expanded)}'}"
    print(f"submitted SLURM job {job}: python -m experiments.run {shlex.join(args)}")
    print(f"  {where} (summary.json there once it has trained)")
    print(f"  job output: {str(output).replace('%j', job)}; follow it: squeue -j {job}")
    print(f"  compare the runs: python -m experiments.compare {experiment_dir}")
    return 0
