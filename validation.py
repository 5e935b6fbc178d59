"""The one exception type for user mistakes, and the range check every layer uses to raise it.

Neutral ground: cores, datamodules, tasks and the command all import from here, and it imports nothing
of theirs. The command prints a ConfigError's message in one line and exits with code 2.
"""

from __future__ import annotations

import math


class ConfigError(ValueError):
    """A setting or an input that the user can fix; the message says what is wrong and how to fix it."""


def check_range(name: str, value: float, low: float, high: float = float("inf"), *, low_open: bool = False) -> None:
    """Reject a setting outside [low, high] (or (low, high]), NaN or infinite, with a message that names it."""
    below = value <= low if low_open else value < low
    # NaN compares false with everything, and an infinite value is no setting: both are refused.
    if below or value > high or not math.isfinite(value):
        bracket = "(" if low_open else "["
        upper = "inf)" if high == float("inf") else f"{high}]"
        raise ConfigError(f"{name} must be in {bracket}{low}, {upper}, got {value}")
