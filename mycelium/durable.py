"""Making a rename or a new file survive a power cut: the directory entry is fsynced too.

Standard library only: the release supervisor imports it while the venv it runs from is switched."""

from __future__ import annotations

import os
from pathlib import Path


def fsync_dir(directory: Path) -> None:
    """fsync a directory, so a rename or create inside it is on disk before anyone relies on it."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
