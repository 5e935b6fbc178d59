"""Short runs of the presets, each trained once per test session and shared by every test that checks one
(its metrics and predictions in test_presets, its exports in test_export), across xdist workers: the first
test to ask for a preset trains it under a file lock; the others wait for it and read the same run."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from filelock import FileLock

from experiments.run import main as run

# One epoch of 4 training batches, validated and tested on 2: a run that goes through every stage quickly.
LIMITS = [
    "--trainer.max_steps=-1",
    "--trainer.max_epochs=1",
    "--trainer.limit_train_batches=4",
    "--trainer.limit_val_batches=2",
    "--trainer.limit_test_batches=2",
    "--trainer.val_check_interval=null",
]
SHORT = [
    *LIMITS,
    "--trainer.num_sanity_val_steps=0",
    "--data.batch_size=16",  # a quarter of most presets' batches: the same code, faster (greedy decoding)
]


def short_run(preset: str, folder: Path, *extra: str) -> Path:
    """`preset` trained for 4 steps (validated and tested on 2 batches) in `folder`/runs; its run dir."""
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("FIRSTLIGHT_RUN_ID", raising=False)  # a run id left by an earlier run is not reused
        assert run(["--config", preset, *SHORT, f"--run.root={folder / 'runs'}", *extra]) == 0
    (run_dir,) = (folder / "runs" / preset).iterdir()
    return run_dir


class PresetRuns:
    """`runs(preset)`: the run dir of `preset`'s short run (no logger) in `folder`, trained on first use."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)

    def __call__(self, preset: str) -> Path:
        folder = self.folder / preset
        finished = self.folder / f"{preset}.run"  # written once the run has passed: its run dir
        with FileLock(self.folder / f"{preset}.lock"):
            if not finished.exists():
                shutil.rmtree(folder, ignore_errors=True)  # what a failed attempt left
                finished.write_text(str(short_run(preset, folder, "--run.logger=none")))
            return Path(finished.read_text())
