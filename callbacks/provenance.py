"""Provenance: the code version (git commit, dirty flag, diff) and the environment, saved with the run."""

from __future__ import annotations

import json
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.utilities import rank_zero_only

REPOSITORY = Path(__file__).resolve().parents[1]
PACKAGES = ("torch", "torchvision", "lightning", "torchmetrics", "wandb", "jsonargparse", "tokenizers", "numpy")


def git(*args: str) -> str | None:
    try:
        result = subprocess.run(["git", *args], cwd=REPOSITORY, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return result.stdout if result.returncode == 0 else None


def code_version() -> tuple[dict[str, Any], str]:
    """({"commit", "dirty"}, the diff against the commit); commit None outside a git checkout."""
    commit = git("rev-parse", "HEAD")
    if commit is None:
        return {"commit": None, "dirty": None}, ""
    diff = git("diff", "HEAD") or ""
    untracked = git("status", "--porcelain", "--untracked-files=normal") or ""
    return {"commit": commit.strip(), "dirty": bool(untracked.strip())}, diff


def environment() -> dict[str, Any]:
    versions: dict[str, str | None] = {}
    for package in PACKAGES:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    return {"python": sys.version.split()[0], "platform": platform.platform(), "packages": versions}


class Provenance(L.Callback):
    """Writes provenance.json (and code.diff when the tree is dirty) into the run directory when training
    starts, adds them to the W&B config under `code` and `environment`, and logs them with config.yaml
    as a W&B artifact of type "provenance"."""

    def __init__(self, run_dir: str) -> None:
        self.run_dir = Path(run_dir)

    @rank_zero_only
    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        code, diff = code_version()
        record = {"code": code, "environment": environment()}
        files = [self.run_dir / "provenance.json"]
        files[0].write_text(json.dumps(record, indent=2) + "\n")
        if diff:
            files.append(self.run_dir / "code.diff")
            files[1].write_text(diff)
        if (self.run_dir / "config.yaml").is_file():
            files.append(self.run_dir / "config.yaml")
        from lightning.pytorch.loggers import WandbLogger

        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                import wandb

                logger.experiment.config.update(record, allow_val_change=True)
                artifact = wandb.Artifact(f"provenance-{logger.experiment.id}", type="provenance", metadata=record)
                for path in files:
                    artifact.add_file(str(path))
                logger.experiment.log_artifact(artifact)
