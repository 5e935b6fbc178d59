"""Where firstlight keeps data it fetched once, for every datamodule to read offline afterwards."""

from __future__ import annotations

import os
from pathlib import Path


def firstlight_cache() -> Path:
    """firstlight's folder of the user's cache: $XDG_CACHE_HOME/firstlight, else ~/.cache/firstlight."""
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "firstlight"


def cache_dir() -> Path:
    """Where downloads go when no data_dir is given: $FIRSTLIGHT_DATA, else ~/.cache/firstlight/data."""
    return Path(os.environ.get("FIRSTLIGHT_DATA", firstlight_cache() / "data"))
