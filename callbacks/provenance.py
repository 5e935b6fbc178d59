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
    """({"commit", "dirty", "untracked_imported"}, the diff against the commit); commit None outside a git
    checkout. Files that git does not track but the run imported (a new model file not yet added) are in
    the diff as new files, so `git apply code.diff` on the commit gives the code that ran."""
    commit = git("rev-parse", "HEAD")
    if commit is None:
        return {"commit": None, "dirty": None, "untracked_imported": []}, ""
    diff = git("diff", "HEAD") or ""
    untracked = git("status", "--porcelain", "--untracked-files=normal") or ""
    imported = untracked_imports()
    code = {"commit": commit.strip(), "dirty": bool(untracked.strip()), "untracked_imported": imported}
    return code, diff + "".join(map(new_file_diff, imported))


def untracked_imports() -> list[str]:
    """Paths (relative to the repository) of the modules this process imported that git does not track."""
    untracked = {line for line in (git("ls-files", "--others", "--exclude-standard") or "").splitlines() if line}
    files = (getattr(module, "__file__", None) for module in list(sys.modules.values()))
    imported = {Path(file).resolve() for file in files if file}
    return sorted(path for path in untracked if (REPOSITORY / path).resolve() in imported)


def new_file_diff(path: str) -> str:
    """`path` as a git diff that creates it."""
    lines = (REPOSITORY / path).read_text(errors="replace").splitlines(keepends=True)
    body = "".join(f"+{line}" if line.endswith("\n") else f"+{line}\n\\ No newline at end of file\n" for line in lines)
    header = f"diff --git a/{path} b/{path}\nnew file mode 100644\n--- /dev/null\n+++ b/{path}\n"
    return header + (f"@@ -0,0 +1,{len(lines)} @@\n{body}" if lines else "")


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
