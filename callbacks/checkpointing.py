"""Checkpoints that survive crashes, carry the run's identity and random state, and are found on resume.

- `AtomicCheckpointIO` writes each checkpoint to a temporary file in the same folder and renames it into
  place, so a kill or a full disk during a save leaves the previous file intact, never half of one.
- `RunState` stores the run id (also the W&B run id), every random generator's state and the training
  loader's position in the checkpoint, and restores them on resume, so a resumed run sees the same
  batches and draws the same dropout masks and augmentations as one left uninterrupted.
- `resume_checkpoint` picks the checkpoint to resume from: `last.ckpt`, else the newest; a file that
  does not load (truncated, corrupt) is skipped with a warning naming it.
"""

from __future__ import annotations

import errno
import os
import random
import warnings
from pathlib import Path
from typing import Any, BinaryIO

import lightning as L
import numpy as np
import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from validation import NOT_PLAIN


class CheckpointWriteError(OSError):
    """A checkpoint could not be written (a full disk, a lost mount); the file it replaces is untouched."""

    def __init__(self, path: Path, error: OSError) -> None:
        hint = "; free some space, or keep runs on another disk with --run.root" if error.errno == errno.ENOSPC else ""
        super().__init__(error.errno, f"could not write checkpoint {path}: {error.strerror or error}{hint}")
        self.path = path


class RecordedWrites:
    """A binary file whose first failed write (its OSError: "No space left on device", ...) is kept."""

    def __init__(self, file: BinaryIO) -> None:
        self.file = file
        self.error: OSError | None = None

    def write(self, data: bytes) -> int:
        try:
            return self.file.write(data)
        except OSError as error:
            self.error = self.error or error
            raise

    def flush(self) -> None:
        self.file.flush()


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes a checkpoint to a temporary file, flushes it to disk and renames it over the old one, so a
    checkpoint file is always complete: a save that fails (a full disk, a kill) leaves the previous file."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            with open(temporary, "wb") as file:
                writes = RecordedWrites(file)
                try:
                    torch.save(checkpoint, writes)  # type: ignore[arg-type]  # (it only calls write and flush)
                except RuntimeError as error:  # torch's zip writer reports a failed write as RuntimeError
                    if writes.error is None:
                        raise
                    raise writes.error from error
                file.flush()
                os.fsync(file.fileno())  # on disk before the rename makes it the checkpoint
            os.replace(temporary, path)
        except OSError as error:
            temporary.unlink(missing_ok=True)
            raise CheckpointWriteError(path, error) from error
        except BaseException:
            temporary.unlink(missing_ok=True)
            raise


def random_states() -> dict[str, Any]:
    """Every generator's state as tensors and plain numbers, so the checkpoint loads with weights_only."""
    kind, keys, position, has_gauss, cached = np.random.get_state(legacy=True)
    version, state, gauss = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "torch.cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": [kind, torch.from_numpy(np.asarray(keys, dtype=np.int64)), position, has_gauss, cached],
        "python": [version, list(state), gauss],
    }


def set_random_states(states: dict[str, Any]) -> None:
    torch.set_rng_state(states["torch"])
    if states["torch.cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["torch.cuda"])
    kind, keys, position, has_gauss, cached = states["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), position, has_gauss, cached))
    version, state, gauss = states["python"]
    random.setstate((version, tuple(state), gauss))


class RunState(L.Callback):
    """Puts {"run_id", "random_states", "train_loader"} under "firstlight" in every checkpoint, and
    restores the generators and the loader's position when training resumes.

    Lightning restores a resumable loader itself only if it has not built the loaders before restoring
    the checkpoint, which it does whenever a schedule asks for `estimated_stepping_batches`; so the
    position is kept here too and applied when training starts, after everything else is restored.
    """

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        self.restored: dict[str, Any] | None = None

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        loader: Any = trainer.train_dataloader
        state = {"run_id": self.run_id, "random_states": random_states()}
        if hasattr(loader, "state_dict"):
            state["train_loader"] = loader.state_dict()
        checkpoint["firstlight"] = state

    def on_load_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        if trainer.state.fn == "fit":
            self.restored = checkpoint.get("firstlight")

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.restored is None:
            return
        loader: Any = trainer.train_dataloader
        if "train_loader" in self.restored and hasattr(loader, "load_state_dict"):
            loader.load_state_dict(self.restored["train_loader"])
        set_random_states(self.restored["random_states"])
        self.restored = None


def loads(path: Path) -> bool:
    try:
        torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:
        return False
    return True


def resume_checkpoint(run_dir: Path) -> Path | None:
    """The checkpoint to resume from: last.ckpt if it loads, else the newest one that loads."""
    found = sorted((run_dir / "checkpoints").glob("*.ckpt"), key=lambda p: (p.name == "last.ckpt", p.stat().st_mtime))
    for path in reversed(found):
        if loads(path):
            return path
        warnings.warn(f"skipping checkpoint {path}: {NOT_PLAIN}", stacklevel=2)
    return None
