"""Where a checkpoint or data file is: a URL or a path (a torch-free leaf, read by specs and
loaders alike)."""

from __future__ import annotations

import re
from pathlib import Path


def is_url(location: str | Path) -> bool:
    """Whether a checkpoint location is an ``http(s)://`` URL rather than a path."""
    return re.match(r"https?://", str(location)) is not None
