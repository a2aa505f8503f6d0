"""Where datasets live on disk when the user does not say."""

from __future__ import annotations

import os
from pathlib import Path

DATA_ENV_VAR = "LAYERLOTTERY_DATA"


def default_data_root() -> Path:
    """``$LAYERLOTTERY_DATA`` if set, else ``~/.cache/layerlottery``."""
    env = os.environ.get(DATA_ENV_VAR)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "layerlottery"


def resolve_root(data_dir: str | os.PathLike[str] | None) -> Path:
    """The user's ``data_dir`` (with ``~`` expanded) or the default data root."""
    return Path(data_dir).expanduser() if data_dir is not None else default_data_root()
