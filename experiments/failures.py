"""How a run that stops short is reported: a user's mistake (exit 2, nothing kept) or a fault (exit 1,
files kept), each in one line."""

from __future__ import annotations

import contextlib
import shutil
import sys
import traceback
from pathlib import Path

import lightning as L
from lightning.pytorch.utilities.exceptions import MisconfigurationException

from experiments.tracking import finish_tracking
from validation import ConfigError

NON_FINITE_HINT = "Lower the learning rate (--model.init_args.lr) or clip gradients (--trainer.gradient_clip_val 1.0)"


def user_error(error: BaseException) -> ConfigError | None:
    """The ConfigError behind an exception, if any (jsonargparse wraps errors raised while instantiating)."""
    while error is not None and not isinstance(error, ConfigError):
        error = error.__cause__ or error.__context__  # type: ignore[assignment]
    return error


def rejected_by_lightning(error: BaseException, trainer: L.Trainer) -> ConfigError | None:
    """Lightning's own check of the trainer options against the model and data, before the first training
    step (e.g. a validation interval longer than an epoch), as a user's mistake. Only errors raised in
    Lightning's code: one from the model or torch is a fault, and keeps its traceback."""
    if trainer.global_step > 0 or not isinstance(error, ValueError | MisconfigurationException):
        return None
    frames = traceback.extract_tb(error.__traceback__)
    if not frames or "/lightning/" not in frames[-1].filename.replace("\\", "/"):
        return None
    return ConfigError(f"trainer: {' '.join(str(error).split())}")


def stopped_by_fault(trainer: L.Trainer, message: str) -> int:
    """Report a run stopped by a fault (not a user's mistake) in one line; exit code 1, files kept."""
    if trainer.is_global_zero:
        finish_tracking(trainer, exit_code=1)
        print(f"error: {message}", file=sys.stderr)  # the last line, after W&B's footer
    return 1


def discard_unused_run(trainer: L.Trainer, created: list[Path]) -> None:
    """Remove the folders this run created (`missing_folders` of its directory: the run directory, then the
    experiment and root folders it had to make) if it was stopped before it saved any checkpoint. A folder
    that existed before, a user's own empty --run.root or a resumed run, stays."""
    if created and not any((created[0] / "checkpoints").glob("*.ckpt")):
        finish_tracking(trainer, silent=True)  # W&B's footer would say to sync the files removed next
        shutil.rmtree(created[0], ignore_errors=True)
        for folder in created[1:]:
            with contextlib.suppress(OSError):  # not empty: other runs live there
                folder.rmdir()
