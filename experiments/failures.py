"""How a run that stops short is reported: a user's mistake (exit 2, nothing kept) or a fault (exit 1,
files kept), each in one line."""

from __future__ import annotations

import contextlib
import shutil
import sys
from pathlib import Path

import lightning as L

from experiments.tracking import finish_tracking
from validation import ConfigError

NON_FINITE_HINT = "Lower the learning rate (--model.init_args.lr) or clip gradients (--trainer.gradient_clip_val 1.0)"


def user_error(error: BaseException) -> ConfigError | None:
    """The ConfigError behind an exception, if any (jsonargparse wraps errors raised while instantiating)."""
    while error is not None and not isinstance(error, ConfigError):
        error = error.__cause__ or error.__context__  # type: ignore[assignment]
    return error


def stopped_by_fault(trainer: L.Trainer, message: str) -> int:
    """Report a run stopped by a fault (not a user's mistake) in one line; exit code 1, files kept."""
    if trainer.is_global_zero:
        print(f"error: {message}", file=sys.stderr)
        finish_tracking(trainer, exit_code=1)
    return 1


def discard_unused_run(trainer: L.Trainer, run_dir: Path) -> None:
    """Remove the directory of a run stopped by a user mistake before it saved anything worth keeping
    (and the experiment and root folders if that leaves them empty)."""
    if not any((run_dir / "checkpoints").glob("*.ckpt")):
        finish_tracking(trainer)
        shutil.rmtree(run_dir, ignore_errors=True)
        for folder in (run_dir.parent, run_dir.parent.parent):
            with contextlib.suppress(OSError):  # not empty: other runs live there
                folder.rmdir()
