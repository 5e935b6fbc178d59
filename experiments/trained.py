"""A trained model back from its checkpoint alone, ready for new inputs: what predict, explain and export share.

A checkpoint holds everything: the task and its core as plain data (`hyper_parameters`, with `_class_path`),
the datamodule's arguments (`datamodule_hyper_parameters`) and its inference state (the training split's
statistics, class names, tokenizer: `DataModule.inference_state`). It is read with `weights_only=True`, so a
checkpoint from anywhere runs no code of its own.

    trained = load_trained("runs/cnn_digits/20261130-101010-abcdef")   # or a run id, a .ckpt, a W&B artifact
    batch = trained.datamodule.encode_inputs([Path("seven.png")])
    rows = trained.task.predictions(batch, trained.datamodule)
"""

from __future__ import annotations

import importlib
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from datamodules.base import DataModule
from experiments.command_line import locate_checkpoint
from modules.task import TaskModule
from validation import NOT_PLAIN, ConfigError


@dataclass
class Trained:
    task: TaskModule  # in eval mode, on the CPU
    datamodule: DataModule  # its inference state restored; its data is not loaded
    checkpoint: Path
    run_dir: Path | None  # None for a checkpoint outside a run directory (e.g. a W&B artifact)
    note: str = ""  # how the checkpoint was chosen, for the user


def import_class(path: str, base: type, what: str) -> type:
    """The class a checkpoint names, if it is a `base` (a checkpoint names no other code)."""
    module_name, _, class_name = path.rpartition(".")
    try:
        found = getattr(importlib.import_module(module_name), class_name, None)
    except ImportError:
        found = None
    if not (isinstance(found, type) and issubclass(found, base)):
        raise ConfigError(f"the checkpoint's {what} {path} is not a firstlight {base.__name__} importable here")
    return found


def plain_arguments(hparams: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in hparams.items() if not key.startswith("_")}


def load_checkpoint(path: Path) -> dict[str, Any]:
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)  # optimizer state left unread
    except FileNotFoundError:
        raise ConfigError(f"checkpoint {path} not found; give a run directory or a .ckpt file") from None
    except Exception:  # unpickling refused (torch's message advises the unsafe way), truncated file, not a zip
        raise ConfigError(f"checkpoint {path} is refused: {NOT_PLAIN}") from None


def same_state(a: Any, b: Any) -> bool:
    """Inference states equal as plain data, floats to within float32 rounding (statistics computed again)."""
    if isinstance(a, float) or isinstance(b, float):
        return isinstance(a, int | float) and isinstance(b, int | float) and math.isclose(a, b, rel_tol=1e-5)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same_state(a[key], b[key]) for key in a)
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(same_state(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def rebuilt_data(trained: Trained) -> DataModule:
    """The run's data, set up again from the checkpoint's datamodule arguments (its splits are seeded), for what
    needs real batches (export's check, the quantisation benchmark's test split). Raises ConfigError where the
    data is not here, or where what it rebuilds (tokenizer, classes, statistics) differs from the checkpoint's
    inference state: the inputs would not be the ones the model saw."""
    restored = trained.datamodule
    data = type(restored)(**plain_arguments(dict(restored.hparams)))
    data.prepare_data()
    data.setup("fit")
    if not same_state(data.inference_state(), restored.inference_state()):
        what = "its tokenizer, classes or statistics"
        raise ConfigError(f"the data rebuilt here differs from the run's ({what} in {trained.checkpoint})")
    return data


def load_trained(reference: str, root: Path = Path("runs")) -> Trained:
    """The model of a run (directory or id under `root`), a checkpoint file, or a W&B model artifact."""
    path, run_dir, note = locate_checkpoint(reference, root)
    checkpoint = load_checkpoint(path)
    task_hparams = checkpoint.get("hyper_parameters") or {}
    data_hparams = checkpoint.get("datamodule_hyper_parameters") or {}
    if "_class_path" not in task_hparams or "_class_path" not in data_hparams:
        raise ConfigError(f"checkpoint {path} was not written by `python -m experiments.run`; it names no task or data")
    task_class = import_class(task_hparams["_class_path"], TaskModule, "task")
    data_class = import_class(data_hparams["_class_path"], DataModule, "datamodule")
    state = (checkpoint.get(data_class.__qualname__) or {}).get("inference")
    if not state:
        raise ConfigError(
            f"checkpoint {path} holds no inference state (it predates it, or its datamodule keeps none); "
            "train the run again with this version"
        )
    datamodule = data_class(**plain_arguments(data_hparams))
    datamodule.load_inference_state(state)
    task = task_class(**plain_arguments(task_hparams))
    task.load_state_dict(checkpoint["state_dict"])
    task.eval()
    return Trained(task, datamodule, path, run_dir, note)
