"""Files that survive a crash once published: flush what was written before a rename makes it
visible (the archive of finished study runs and the carried records of unfinished ones are
built in a temporary folder and renamed into place)."""

from __future__ import annotations

import os
from pathlib import Path


def flush_tree(folder: Path) -> None:
    """Every file under ``folder`` (and the folders) on disk, before the rename publishes them."""
    for f in folder.rglob("*"):
        if f.is_file():
            with open(f, "rb+") as handle:
                os.fsync(handle.fileno())
    for d in [folder, *(d for d in folder.rglob("*") if d.is_dir())]:
        flush_folder(d)


def flush_folder(folder: Path) -> None:
    """A folder's entries (a rename into it, a file made in it) on disk."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
