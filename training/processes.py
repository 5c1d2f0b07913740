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
import time
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


def stop_groups(procs: list[subprocess.Popen], grace_s: float = 30.0) -> None:
    """Stop several children at once: SIGTERM to every group first, then one shared wait of
    ``grace_s`` before SIGKILL, so stopping many runs takes ``grace_s`` at most, not each."""
    live = [p for p in procs if p.poll() is None]
    for proc in live:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + grace_s
    for proc in live:
        try:
            proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait()


def exit_on_sigterm() -> None:
    """Turn SIGTERM into ``SystemExit`` in this process, so a runner stopped from outside
    (a time limit, a kill) runs its ``finally`` blocks and stops its children's groups."""
    def handler(signum, frame):  # noqa: ARG001 - the signal module's signature
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, handler)
