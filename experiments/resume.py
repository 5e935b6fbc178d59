"""Which run a command trains: a new one, or an unfinished one to resume, and from which checkpoint."""

from __future__ import annotations

import hashlib
import itertools
import os
from pathlib import Path
from typing import Any

from callbacks.checkpointing import resume_checkpoint
from experiments.rundir import check_run_root, cluster_run_id, finished, locate_run, new_run_id, unfinished_runs
from experiments.tracking import wandb_sweep_run_id
from validation import ConfigError

RUN_ID_ENV = "FIRSTLIGHT_RUN_ID"  # shared with the worker processes that DDP launches
RUN_DIR_ENV = "FIRSTLIGHT_RUN_DIR"  # the directory rank 0 chose, for those workers
RESUME_ENV = "FIRSTLIGHT_RESUME_FROM"  # the checkpoint rank 0 chose to resume from, for those workers


def choose_run(options: Any, experiment: str, command: list[str]) -> tuple[Path, Path | None]:
    """The run's directory and the checkpoint to resume from (None for a new run).

    DDP workers take rank 0's choice from the environment. `--run.resume` names a run (directory or
    id) or asks for the newest unfinished run of the experiment ("auto"). Under SLURM the run id is the
    job's and the command's (its arguments, `command`), so a requeued job finds and resumes its own run,
    and two commands of one job train two runs.
    """
    root = Path(options.root)
    check_run_root(root)
    if RUN_ID_ENV in os.environ:  # chosen by rank 0 (or by a sweep, which names the id only)
        chosen = os.environ.get(RESUME_ENV)
        chosen_dir = Path(os.environ.get(RUN_DIR_ENV) or root / experiment / os.environ[RUN_ID_ENV])
        return chosen_dir.absolute(), Path(chosen) if chosen else None
    run_dir: Path | None
    if options.resume == "auto":
        candidates = unfinished_runs(root / experiment)
        run_dir = candidates[0] if candidates else None
    elif options.resume:
        run_dir = locate_run(options.resume, root)
        if finished(run_dir):
            raise ConfigError(f"run {run_dir} has finished; nothing to resume (leave out --run.resume for a new run)")
    else:
        cluster_id = cluster_run_id()
        run_dir = root / experiment / f"{cluster_id}-{command_digest(command)}" if cluster_id else None
        if run_dir is None or finished(run_dir):
            return (root / experiment / (wandb_sweep_run_id() or new_run_id())).absolute(), None
    if run_dir is None:
        return (root / experiment / new_run_id()).absolute(), None
    checkpoint = resume_checkpoint(run_dir) if run_dir.is_dir() else None
    if checkpoint is None and options.resume is not None:  # never train from scratch over a run's files
        which = "the newest unfinished run" if options.resume == "auto" else "run"
        raise ConfigError(
            f"{which} {run_dir} has no checkpoint that loads; nothing to resume (delete that run, or leave out "
            "--run.resume for a new run)"
        )
    return run_dir.absolute(), checkpoint


def command_digest(command: list[str]) -> str:
    """6 hex digits that tell a job's commands apart, the same each time the job is requeued."""
    return hashlib.sha256("\0".join(command).encode()).hexdigest()[:6]


def check_checkpoint_fits(model: Any, checkpoint: Path) -> None:
    """Refuse, before the run is touched, a checkpoint whose weights do not fit `model`: a resume with other
    sizes (`--model.net.dim`, another vocabulary) than the run was trained with. Lazy parameters, not yet
    built, are left to Lightning."""
    import torch
    from torch.nn.parameter import is_lazy

    saved = torch.load(checkpoint, map_location="cpu", weights_only=True, mmap=True)["state_dict"]
    own = {name: tensor for name, tensor in model.state_dict().items() if not is_lazy(tensor)}
    problems = [f"{name} is missing" for name in own.keys() - saved.keys()]
    problems += [f"{name} is not in this model" for name in saved.keys() - model.state_dict().keys()]
    problems += [
        f"{name} is {tuple(saved[name].shape)}, this model's {tuple(tensor.shape)}"
        for name, tensor in own.items()
        if name in saved and saved[name].shape != tensor.shape
    ]
    if problems:
        raise ConfigError(
            f"checkpoint {checkpoint} does not fit this model ({len(problems)} weights differ, e.g. "
            f"{sorted(problems)[0]}); resume with the settings the run was trained with (its config.yaml)"
        )


def forget_run_choice() -> None:
    """Clear rank 0's choice from the environment, so the next run in this process chooses anew."""
    for name in (RUN_ID_ENV, RUN_DIR_ENV, RESUME_ENV):
        os.environ.pop(name, None)


def resumed_config(args: list[str]) -> list[str]:
    """`--run.resume <run>` without `--config` runs with the config that run was started with."""
    options = dict(itertools.pairwise(args)) | dict(a.split("=", 1) for a in args if "=" in a)
    run = options.get("--run.resume")
    if not run or run == "auto" or any(a in ("-c", "--config") or a.startswith("--config=") for a in args):
        return args
    return ["--config", str(locate_run(run, Path(options.get("--run.root", "runs"))) / "config.yaml"), *args]


def checkpoint_step(path: Path) -> int:
    """The training step a checkpoint was saved at."""
    import torch

    return int(torch.load(path, map_location="cpu", weights_only=True, mmap=True)["global_step"])


def last_good_checkpoint(run_dir: Path) -> str:
    """Which checkpoint a stopped run keeps, for its error message."""
    last = run_dir / "checkpoints" / "last.ckpt"
    if last.is_file():
        return f"the last good checkpoint is {last} (step {checkpoint_step(last)})"
    return "no checkpoint had been saved yet"
