"""history.jsonl: every logged metric with its step, in the run directory, whatever the tracker.

`python -m experiments.compare` reads it, so runs can be compared offline even with W&B disabled.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from lightning.pytorch.loggers import Logger
from lightning.pytorch.utilities import rank_zero_only

from validation import ConfigError

NOT_METRICS = ("step", "epoch", "wall_time")  # the fields of a history record that say when, not how well


class HistoryLogger(Logger):
    """Appends one JSON object per logging call: {"step": 99, "wall_time": 1796041812.35, "val/acc": 0.91, ...},
    `wall_time` in seconds since the Unix epoch (compare's curves against time)."""

    def __init__(self, run_dir: str) -> None:
        super().__init__()
        self.path = Path(run_dir) / "history.jsonl"

    @property
    def name(self) -> str:
        return "history"

    @property
    def version(self) -> str:
        return ""

    @rank_zero_only
    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        pass  # config.yaml holds them

    @rank_zero_only
    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        record = {"step": step, "wall_time": round(time.time(), 3), **{n: float(v) for n, v in metrics.items()}}
        try:
            with self.path.open("a") as file:
                file.write(json.dumps(record) + "\n")
        except OSError as error:  # a write() error names no file: name it (a full disk stops the run)
            raise OSError(error.errno, error.strerror, str(self.path)) from None


def trim_history(run_dir: Path, last_step: int) -> None:
    """Before resuming from a checkpoint at `last_step`, drop records logged after it (they are redone)."""
    if not (run_dir / "history.jsonl").is_file():
        return
    records = [r for r in read_history(run_dir) if r.get("step") is None or r["step"] < last_step]
    text = "".join(json.dumps(record) + "\n" for record in records)
    temporary = run_dir / ".history.jsonl.tmp"
    temporary.write_text(text)
    temporary.replace(run_dir / "history.jsonl")


def read_history(run_dir: Path) -> list[dict[str, Any]]:
    """The records of history.jsonl. A last line that is not JSON is an append cut short (a kill, a crash or
    a full disk in the middle of a write): that one record is lost and left out. Damage anywhere else is
    reported, naming the line."""
    path = run_dir / "history.jsonl"
    if not path.is_file():
        return []
    lines = path.read_text(errors="replace").splitlines()
    records = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            if number == len(lines):
                break
            raise ConfigError(f"{path} line {number} is damaged (not JSON); delete that line to go on") from None
        if not isinstance(record, dict):
            raise ConfigError(f"{path} line {number} is damaged (not a record); delete that line to go on")
        records.append(record)
    return records


def last_logged(run_dir: Path) -> dict[str, float]:
    """Each metric's last value in history.jsonl: a resumed run whose training had ended logs none itself."""
    values: dict[str, float] = {}
    for record in read_history(run_dir):
        values |= {name: value for name, value in record.items() if name not in NOT_METRICS}
    return values
