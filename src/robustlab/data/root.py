"""Where datasets live: one rule, so the CLI, configs and tests all look in the same place."""

from __future__ import annotations

import os
from pathlib import Path

DATA_ROOT_ENV = "ROBUSTLAB_DATA"


def default_data_root() -> Path:
    return Path.home() / ".cache" / "robustlab"


def resolve_data_root(explicit: str | Path | None = None) -> Path:
    """The data root: ``explicit`` if given, else ``$ROBUSTLAB_DATA``, else ~/.cache/robustlab."""
    if explicit is not None and str(explicit).strip():
        return Path(explicit).expanduser()
    from_env = os.environ.get(DATA_ROOT_ENV, "").strip()
    if from_env:
        return Path(from_env).expanduser()
    return default_data_root()
