"""`--model.init_from`: a new run starts from the weights of an earlier run (a backbone trained on other data).

The core's tensors of the same name and shape are copied from the earlier run's checkpoint; the others (a head
for another number of classes, a layer sized by another dataset) keep their fresh initialisation and are named in
the run's start note. Only the weights come over: the optimizer, the schedule and the epoch start afresh, which
is what sets it apart from `--run.resume`. A checkpoint of another core is refused: its tensors would match by
accident, if at all.
"""

from __future__ import annotations

from pathlib import Path

import torch

from cores.contracts import Core
from experiments.command_line import locate_checkpoint
from experiments.trained import load_checkpoint
from modules.task import TaskModule
from validation import ConfigError

CORE = "net."  # the task's core, whose weights come over; the task's metric states do not
SHOWN = 4  # fresh tensors named in the note; the rest are counted


def init_from(model: TaskModule, reference: str, root: Path) -> str:
    """Copy the weights of `reference` (a run directory, run id, .ckpt file or W&B model artifact) that fit
    `model`'s core into it; the one-line note of what was loaded and what was left fresh."""
    path, _, chosen = locate_checkpoint(reference, root)
    checkpoint = load_checkpoint(path)
    theirs = core_class(checkpoint.get("hyper_parameters") or {})
    ours = model.net.config()["class_path"] if isinstance(model.net, Core) else None
    if theirs is None or theirs != ours:
        raise ConfigError(
            f"--model.init_from {reference}: its core is {theirs or 'not named (not a firstlight run)'}, this run's "
            f"{ours}; init_from loads weights into the same architecture (another one: train it from scratch)"
        )
    saved: dict[str, torch.Tensor] = checkpoint.get("state_dict") or {}
    own = {key: tensor for key, tensor in model.state_dict().items() if key.startswith(CORE)}
    fits = {key: saved[key] for key in own if key in saved and saved[key].shape == own[key].shape}
    if not fits:
        raise ConfigError(f"--model.init_from {reference}: none of its weights has the shape of this run's")
    model.load_state_dict(fits, strict=False)
    fresh = [key for key in own if key not in fits]
    note = f"init_from {reference} ({chosen}): {len(fits)} of {len(own)} tensors of the core loaded"
    if not fresh:
        return note
    named = ", ".join(describe(key, own, saved) for key in fresh[:SHOWN])
    more = f" and {len(fresh) - SHOWN} more" if len(fresh) > SHOWN else ""
    return f"{note}; left fresh: {named}{more}"


def core_class(hparams: dict) -> str | None:
    net = hparams.get("net")
    return str(net["class_path"]) if isinstance(net, dict) and "class_path" in net else None


def describe(key: str, own: dict[str, torch.Tensor], saved: dict[str, torch.Tensor]) -> str:
    """`net.head.weight` (10x128 here, 4x128 there), or (not in the checkpoint)."""
    here = "x".join(map(str, own[key].shape)) or "scalar"
    if key not in saved:
        return f"{key.removeprefix(CORE)} (not in the checkpoint)"
    there = "x".join(map(str, saved[key].shape)) or "scalar"
    return f"{key.removeprefix(CORE)} ({here} here, {there} there)"
