"""Where the product keeps its files."""

from __future__ import annotations

import os
from pathlib import Path


def default_store_root() -> Path:
    """``$FTCORE_HOME`` if set, else ``~/.ftcore``."""
    return Path(os.environ.get("FTCORE_HOME") or Path.home() / ".ftcore").expanduser()
