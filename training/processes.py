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
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


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


def exit_on_sigterm() -> Any:
    """Turn SIGTERM into ``SystemExit`` in this process, so a runner stopped from outside
    (a time limit, a kill) runs its ``finally`` blocks and stops its children's groups.
    Returns the handler it replaced (to put back).

    A kill of the whole process group also stops the trainer's data-loading workers, and
    torch's SIGCHLD handler would then raise "DataLoader worker killed" in the middle of
    those ``finally`` blocks (measured: it stopped every carry of a killed run). So once
    SIGTERM has arrived, the death of a child is no longer an error, and a second SIGTERM
    (a scheduler that insists) is ignored while they run."""
    global _received

    def handler(signum, frame):  # noqa: ARG001 - the signal module's signature
        global _received
        _received = signum
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second one must not cut the clean-up short
        raise SystemExit(128 + signum)

    _received = None
    return signal.signal(signal.SIGTERM, handler)


_received: int | None = None


def terminating_signal() -> int | None:
    """The signal :func:`exit_on_sigterm`'s handler received, if any. Where the signal
    lands decides what the ``SystemExit`` becomes: inside an extension module's import,
    Python turns it into ``ImportError: initialization failed`` (seen: a SIGTERM during
    matplotlib's first import at the end of an epoch). A caller that must exit with the
    signal's status, wherever it landed, asks here instead of trusting the exception."""
    return _received


def run_queue(items: list[T], start: Callable[[T], subprocess.Popen], succeeded: Callable[[T], bool], *,
              name: Callable[[T], str], log: Callable[[T], Path], jobs: int, deadline: float | None,
              say: Callable[[str], None] = print, poll_s: float = 1.0) -> list[str]:
    """Run one child per item, ``jobs`` at a time, in order, until all have ended or
    ``deadline`` (a ``time.time()``) passes; then stop the running ones, start no more, and
    return the names of the items whose child ended without ``succeeded``. The children
    must be resumable (each saves as it goes): a stopped one goes on at the next call.

    The pruning study's variants and issue 11's ablation campaign are such queues (a GPU
    lease is not: it calibrates every run first, then refits their epochs to its time).
    ``start`` says what it starts (before starting it, so that no child runs unregistered);
    this says how each ended, naming the ``log`` of a failed one.
    """
    if jobs < 1:
        raise ValueError(f"jobs must be at least 1, not {jobs}")
    pending = list(items)
    running: list[tuple[T, subprocess.Popen]] = []
    failed: list[str] = []
    try:
        while pending or running:
            while pending and len(running) < jobs and (deadline is None or time.time() < deadline):
                item = pending.pop(0)
                running.append((item, start(item)))
            time.sleep(poll_s)
            for entry in list(running):
                item, proc = entry
                if proc.poll() is None:
                    continue
                running.remove(entry)
                if succeeded(item):
                    say(f"finished {name(item)}")
                else:
                    failed.append(name(item))
                    say(f"FAILED {name(item)} (exit {proc.returncode}; see {log(item)})")
            if deadline is not None and time.time() >= deadline:
                for item, _ in running:
                    say(f"stopped {name(item)} at the deadline (resumes next time)")
                if pending:
                    say(f"time is up: not started {', '.join(name(item) for item in pending)}")
                break
    finally:  # the deadline, Ctrl-C or an outer SIGTERM: no child trains on unattended
        stop_groups([proc for _, proc in running])
    return failed
