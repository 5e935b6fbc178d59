"""One run, one directory: runs/<experiment>/<run id>/ with config.yaml, checkpoints, W&B files, summary."""

from __future__ import annotations

import json
import math
import os
import secrets
import time
from pathlib import Path
from typing import Any


def new_run_id() -> str:
    """A sortable, unique id, also used as the W&B run id: e.g. 20261129-143012-5f2c9a."""
    return time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(3)


def create_run_dir(path: Path) -> Path:
    """Create the run directory; an existing one is never reused, so no run overwrites another."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.mkdir()  # raises FileExistsError rather than writing into another run
    return path


def write_atomic(path: Path, text: str) -> None:
    """Write to a temporary file, then rename: readers see the old file or the new one, never half of one."""
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(text)
    os.replace(temporary, path)


def plain(value: Any) -> Any:
    """A JSON-friendly number: tensors to floats, NaN/inf to None."""
    value = value.item() if hasattr(value, "item") else value
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_summary(directory: Path, metrics: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """summary.json: a flat object of the final metrics under their logged names, plus `extra` fields."""
    summary = {name: plain(value) for name, value in sorted(metrics.items())} | extra
    write_atomic(directory / "summary.json", json.dumps(summary, indent=2) + "\n")
    return summary
