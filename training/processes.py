"""Child training processes that can be stopped whole: each in its own session.

A training run forks data-loading workers; stopping only the parent leaves them running
(and holding a GPU's memory). So every child that a runner may have to stop at a deadline
is started in a new session, and stopped by signalling its process group, never by name
matching (a ``pkill -f`` once matched the shell that ran it and lost a lease's results).
"""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path


def start_group(cmd: list[str], log: Path, env: dict[str, str] | None = None,
                cwd: str | Path | None = None) -> subprocess.Popen:
    """Start ``cmd`` in its own session, its output appended to ``log``."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, env=env, cwd=cwd)


def stop_group(proc: subprocess.Popen, grace_s: float = 30.0) -> None:
    """Stop a child and everything it started (its process group): SIGTERM, then SIGKILL
    after ``grace_s``. A child that has already ended is left alone."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    except ProcessLookupError:
        pass
