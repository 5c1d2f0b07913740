"""The code version recorded in checkpoints and exported models."""

from __future__ import annotations

import subprocess
from functools import lru_cache
from importlib import metadata
from pathlib import Path

DISTRIBUTION = "polypscope"


@lru_cache(maxsize=1)
def code_version() -> str:
    """``<package version>`` plus ``+g<commit>`` when run from a git checkout."""
    try:
        version = metadata.version(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        version = "0+unknown"
    root = Path(__file__).resolve().parent.parent
    if (root / ".git").exists():
        try:
            out = subprocess.run(
                ["git", "-C", str(root), "rev-parse", "--short=10", "HEAD"],
                capture_output=True, text=True, timeout=5, check=True,
            )
            version += f"+g{out.stdout.strip()}"
        except (OSError, subprocess.SubprocessError):
            pass
    return version
