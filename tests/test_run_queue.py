"""The shared queue of resumable children: order, the jobs limit, failures named, the deadline."""

import subprocess
import sys
import time

import pytest

from training.processes import run_queue


def _child(code: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", code], start_new_session=True)


def test_runs_in_order_at_most_jobs_at_once_and_names_failures():
    started, said, done = [], [], set()
    programs = {"a": "import time; time.sleep(0.5)", "b": "raise SystemExit(3)", "c": "pass"}

    def start(name):
        started.append((name, sum(p.poll() is None for p in procs.values())))
        procs[name] = _child(programs[name])
        return procs[name]

    def succeeded(name):
        ok = procs[name].returncode == 0
        if ok:
            done.add(name)
        return ok

    procs: dict[str, subprocess.Popen] = {}
    failed = run_queue(["a", "b", "c"], start, succeeded, name=str, log=lambda n: f"runs/{n}/log.txt", jobs=2,
                       deadline=None, say=said.append, poll_s=0.05)
    assert failed == ["b"] and done == {"a", "c"}
    assert [n for n, _ in started] == ["a", "b", "c"] and all(live < 2 for _, live in started)
    assert "FAILED b (exit 3; see runs/b/log.txt)" in said and "finished a" in said


def test_the_deadline_stops_the_running_and_starts_no_more():
    procs, said = [], []

    def start(name):
        procs.append(_child("import time; time.sleep(60)"))
        return procs[-1]

    began = time.time()
    failed = run_queue(["x", "y", "z"], start, lambda n: False, name=str, log=str, jobs=2,
                       deadline=time.time() + 0.5, say=said.append, poll_s=0.05)
    assert time.time() - began < 20 and failed == []
    assert len(procs) == 2 and all(p.poll() is not None for p in procs)  # z never started; x and y stopped
    assert said == ["stopped x at the deadline (resumes next time)", "stopped y at the deadline (resumes next time)",
                    "time is up: not started z"]


def test_a_queue_past_its_deadline_starts_nothing_and_needs_a_job():
    def start(name):
        raise AssertionError(f"{name} was started after the deadline")

    said = []
    assert run_queue(["x"], start, lambda n: True, name=str, log=str, jobs=1, deadline=time.time() - 1,
                     say=said.append, poll_s=0.01) == []
    assert said == ["time is up: not started x"]
    with pytest.raises(ValueError, match="jobs must be at least 1"):
        run_queue(["x"], start, lambda n: True, name=str, log=str, jobs=0, deadline=None)
