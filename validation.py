"""The one exception type for user mistakes, the range and name checks every layer uses to raise it, the
import of a package that only an extra installs, and the one line that a library's error becomes in a message.

Neutral ground: cores, datamodules, tasks and the command all import from here, and it imports nothing
of theirs. The command prints a ConfigError's message in one line and exits with code 2.
"""

from __future__ import annotations

import importlib
import math
from types import ModuleType

# Packages that `pip install firstlight` leaves out: top-level module -> the extra of pyproject.toml that
# installs it (`[all]` installs every one). Code imports them with `require`, inside the function that needs
# them, never at a module's top: the core install imports every module of the core path.
EXTRAS = {
    "soundfile": "audio",  # reading and writing recordings
    "scipy": "audio",  # resampling them (scikit-learn installs it too)
    "sacrebleu": "translation",  # BLEU and chrF
    "transformers": "hf",  # Hugging Face models and their tokenizers
    "onnx": "export",  # ONNX export: torch.onnx.export writes with onnx and onnxscript
    "onnxscript": "export",
    "onnxruntime": "export",  # runs the exported file to check it
    "statsmodels": "series",  # the built-in time series (sunspots, nile, co2, elnino)
    "timm": "pretrained",  # image backbones for ImageNet weights
    "optuna": "search",  # Bayesian search and early stopping for offline sweeps
    "sweeps": "search",  # W&B's own sweep engine, offline (--engine wandb)
}


SEED_MAX = 2**32 - 1  # numpy's seeds, and so Lightning's seed_everything's, are 32-bit unsigned


# Why a checkpoint or a weights file is refused, in the same words everywhere: never torch's advice to load it
# with weights_only=False, which would run whatever code it holds.
NOT_PLAIN = (
    "it does not load as plain tensors and data (truncated, corrupt, or holding other pickled objects, which "
    "firstlight never unpickles)"
)


# A library's message quoted in one of ours is cut here: the exporters' and W&B's run to pages.
QUOTED_LIMIT = 300


class ConfigError(ValueError):
    """A setting or an input that the user can fix; the message says what is wrong and how to fix it."""


def first_line(error: BaseException) -> str:
    """A library's error as one line of ours: the first line of its message, together with the lines it
    introduces when it ends in a colon (transformers' "Validation error for field 'x':" before the reason),
    cut at QUOTED_LIMIT characters; the error's type where it has no message."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    if not lines:
        return type(error).__name__
    end = 1
    while end < len(lines) and lines[end - 1].endswith(":"):
        end += 1
    return " ".join(lines[:end])[:QUOTED_LIMIT]


def check_range(name: str, value: float, low: float, high: float = float("inf"), *, low_open: bool = False) -> None:
    """Reject a setting outside [low, high] (or (low, high]), NaN or infinite, with a message that names it."""
    below = value <= low if low_open else value < low
    # NaN compares false with everything, and an infinite value is no setting: both are refused.
    if below or value > high or not math.isfinite(value):
        bracket = "(" if low_open else "["
        upper = "inf)" if high == float("inf") else f"{high}]"
        raise ConfigError(f"{name} must be in {bracket}{low}, {upper}, got {value}")


def check_name(name: str, value: str) -> str:
    """`value`, a name that becomes one folder under a root (an experiment's, a sweep's), or a ConfigError if
    it would be no folder or lead out of the root: empty, "." or "..", or holding a path separator."""
    if value in ("", ".", "..") or any(mark in value for mark in ("/", "\\", "\0")):
        raise ConfigError(f"{name} must be a plain name, one folder under the root (no '/', '..' or empty): {value!r}")
    return value


def require(module: str, feature: str) -> ModuleType:
    """`import module` for `feature`, or a ConfigError naming the extra that installs it: "`feature` needs the
    audio extra: pip install 'firstlight[audio]'". A package that is there but fails to import (one of its
    own dependencies missing) raises as it is: that is a broken install, not a missing extra."""
    package = module.partition(".")[0]
    extra = EXTRAS[package]
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as error:
        if (error.name or "").partition(".")[0] != package:
            raise
        raise ConfigError(f"{feature} needs the {extra} extra: pip install 'firstlight[{extra}]'") from None
