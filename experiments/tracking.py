"""Experiment trackers: W&B (offline unless configured online), CSV, or none."""

from __future__ import annotations

import netrc
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from lightning.pytorch.loggers import CSVLogger, Logger


@dataclass
class RunOptions:
    """Identity and tracking of a run.

    Args:
        experiment: experiment name; runs go to <root>/<experiment>/<run id>/. Default: the preset's name.
        root: directory that holds all experiments' runs.
        logger: "wandb" (offline unless W&B is configured online; WANDB_MODE is respected), "csv" or "none".
        project: W&B project.
        name: W&B run name. Default: the preset and the arguments given beside it ("cnn_digits lr=0.01").
        group: W&B group. Default: the experiment name.
        tags: W&B tags.
        test: after training, test the best checkpoint.
        patience: stop early after this many validations without improvement of checkpoint.monitor.
        resume: continue a run from its last checkpoint, in its directory and W&B run: a run directory,
            a run id, or "auto" (the newest unfinished run of this experiment; a new run if there is none).
    """

    experiment: str | None = None
    root: str = "runs"
    logger: Literal["wandb", "csv", "none"] = "wandb"
    project: str = "firstlight"
    name: str | None = None
    group: str | None = None
    tags: list[str] = field(default_factory=list)
    test: bool = True
    patience: int | None = None
    resume: str | None = None


def wandb_mode() -> str:
    """WANDB_MODE if set; else online only when credentials exist (WANDB_API_KEY or a netrc entry)."""
    if os.environ.get("WANDB_MODE"):
        return os.environ["WANDB_MODE"]
    if os.environ.get("WANDB_API_KEY"):
        return "online"
    try:
        host = os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai").split("//")[-1]
        if netrc.netrc().authenticators(host):
            return "online"
    except (FileNotFoundError, netrc.NetrcParseError):
        pass
    return "offline"


def wandb_sweep_run_id() -> str | None:
    """The run id a W&B sweep agent gave this process, so the run directory and the W&B run share it."""
    return os.environ.get("WANDB_RUN_ID") if os.environ.get("WANDB_SWEEP_ID") else None


def make_logger(options: RunOptions, experiment: str, run_id: str, run_dir: Path) -> Logger | None:
    if options.logger == "none":
        return None
    if options.logger == "csv":
        return CSVLogger(save_dir=run_dir, name="", version="csv")
    from lightning.pytorch.loggers import WandbLogger

    return WandbLogger(
        save_dir=str(run_dir),
        project=options.project,
        name=options.name or experiment,
        group=options.group or experiment,
        tags=list(dict.fromkeys(options.tags)),  # unique, order kept
        id=run_id,
        job_type="train",
        mode=wandb_mode(),
        resume="allow",  # a resumed run continues its W&B run
        log_model=True,  # checkpoints become model artifacts ("best", "latest") at the end of training
    )
