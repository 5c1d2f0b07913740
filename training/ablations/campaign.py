"""The per-change runs on the CPU, across sittings: a queue of resumable runs.

Without a GPU the ablations of issue 11 take hours each on two cores, more than one sitting
gives. So they run as a campaign: ``jobs`` runs at a time (each a child in its own process
group, ``threads`` torch threads each), every run saving its state at each epoch's end; at
``deadline`` every child is stopped, and the next call resumes each run where it stopped
and starts the ones not begun. A finished run is marked ``done`` (after scoring its final
epoch on the zoom-out set) and never trained again.

Layout: ``out/<run>/train`` is the training run, ``out/<run>/log.txt`` its output,
``out/<run>/zoom_out.json`` its zoom-out figures, ``out/campaign.json`` the settings every
call must share (epochs, data, the runs' recipes): a call with other settings is refused
rather than mixing two recipes in one table.
"""

from __future__ import annotations

import dataclasses
import json
import re
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from training.ablations.job import DONE_FILE, start_job
from training.ablations.plan import Run, config_for, recipe
from training.loop.trainer import TrainConfig
from training.processes import run_queue

SETTINGS_FILE = "campaign.json"
STATE_FILE = "state.safetensors"


@dataclass(frozen=True)
class CampaignSettings:
    data: Path
    out: Path
    zoom: Path
    epochs: int
    threads: int = 1
    workers: int = 1
    device: str = "cpu"


def run_config(settings: CampaignSettings, run: Run) -> TrainConfig:
    return config_for(run, recipe(str(settings.data), settings.epochs, settings.device, settings.workers,
                                  settings.threads), str(settings.out / run.name / "train"))


def _dataclass_fields(text: str) -> tuple[str, dict[str, str]] | None:
    """``"AugmentConfig(a=1.0, b=0.5)"`` as ``("AugmentConfig", {"a": "1.0", "b": "0.5"})``;
    ``None`` for text of another form (the recorded overrides are ``str()`` of values)."""
    match = re.fullmatch(r"(\w+)\((.*)\)", text)
    if match is None:
        return None
    parts = [p.split("=", 1) for p in match.group(2).split(", ") if p]
    if any(len(p) != 2 for p in parts):
        return None
    return match.group(1), dict(parts)


def same_override(recorded: str, value: Any) -> bool:
    """Whether an override recorded by an earlier call means ``value``. A dataclass (the
    augmentation) recorded before a field was added to it reads that field as its default:
    adding an option must not make a campaign refuse its own runs."""
    if str(value) == recorded:
        return True
    parsed = _dataclass_fields(recorded)
    if parsed is None or not dataclasses.is_dataclass(value) or parsed[0] != type(value).__name__:
        return False
    name, before = parsed
    default = type(value)()
    names = {f.name for f in dataclasses.fields(value)}
    if set(before) - names:
        return False
    return all(before.get(n, str(getattr(default, n))) == str(getattr(value, n)) for n in names)


def check_settings(settings: CampaignSettings, runs: list[Run]) -> None:
    """Record the campaign's recipe on its first call; refuse a later call that differs."""
    recorded = {"epochs": settings.epochs, "data": str(settings.data), "zoom": str(settings.zoom),
                "runs": {r.name: {"what": r.what, "overrides": {k: str(v) for k, v in r.overrides.items()}}
                         for r in runs}}
    path = settings.out / SETTINGS_FILE
    if path.is_file():
        before = json.loads(path.read_text())
        differ = [k for k in ("epochs", "data", "zoom") if before.get(k) != recorded[k]]
        asked = {r.name: r for r in runs}
        differ += [f"run {name}" for name in recorded["runs"]
                   if name in before.get("runs", {}) and not _same_run(before["runs"][name], asked[name])]
        if differ:
            raise SystemExit(f"{path}: this campaign was started with other settings ({', '.join(differ)}); "
                             "continue it with the same ones or use another --out")
        recorded["runs"] = {**before.get("runs", {}), **recorded["runs"]}
    settings.out.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(recorded, indent=2))


def _same_run(recorded: dict[str, Any], run: Run) -> bool:
    overrides = recorded.get("overrides", {})
    return (recorded.get("what") == run.what and set(overrides) == set(run.overrides)
            and all(same_override(overrides[k], v) for k, v in run.overrides.items()))


def status(settings: CampaignSettings, run: Run) -> str:
    """``done``, ``started`` (has saved state to resume) or ``new``."""
    folder = settings.out / run.name
    if (folder / DONE_FILE).is_file():
        return "done"
    return "started" if (folder / "train" / STATE_FILE).is_file() else "new"


def run_campaign(settings: CampaignSettings, runs: list[Run], jobs: int, deadline: float | None,
                 say: Callable[[str], None] = print, poll_s: float = 2.0) -> dict[str, str]:
    """Train what is not done, ``jobs`` at a time, until all are done or ``deadline``;
    returns each run's status afterwards."""
    check_settings(settings, runs)

    def start(run: Run) -> subprocess.Popen:
        resume = status(settings, run) == "started"
        say(f"{'resumed' if resume else 'started'} {run.name} (log: {log(run)})")
        return start_job(run_config(settings, run), settings.out / run.name, resume, settings.zoom,
                         checkpoint="last")

    def log(run: Run) -> Path:
        return settings.out / run.name / "log.txt"

    pending = [r for r in runs if status(settings, r) != "done"]
    failed = run_queue(pending, start, lambda r: status(settings, r) == "done", name=lambda r: r.name,
                       log=log, jobs=jobs, deadline=deadline, say=say, poll_s=poll_s)
    return {r.name: "failed" if r.name in failed else status(settings, r) for r in runs}
