"""Where firstlight keeps data it fetched once, for every datamodule to read offline afterwards."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """Where downloads go when no data_dir is given: $FIRSTLIGHT_DATA, else ~/.cache/firstlight/data."""
    default = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "firstlight" / "data"
    return Path(os.environ.get("FIRSTLIGHT_DATA", default))
