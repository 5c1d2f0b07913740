"""Run a lease's plan within its time: calibrate, fit, train side by side, score, bring back.

1. The zoom-out set is made from the (packed) val frames, as ``polypscope data zoom-out``
   does here.
2. Every run starts at once, each in its own process group (``training.processes``), at
   provisional epochs; when each has done ``CALIBRATION_EPOCHS`` epochs, the second one's
   time is its epoch time side by side with the others. All are stopped (their state is
   saved at each epoch's end) and the epochs are fitted to the time left
   (``plan.fit_epochs``).
3. Every run resumes with its fitted epochs. After training, each scores its best
   checkpoint on the zoom-out set itself.
4. Every ``WRITE_EVERY_S`` the results so far go to ``OUT/results.json`` (written whole, then
   renamed), and a run that keeps its weights has them copied to ``OUT/<name>.safetensors``
   (fp16) once it ends. At the deadline what still runs is stopped, and its figures so far
   are reported as unfinished.

Only what is in ``OUT`` comes back from a lease, at most 8 files of 16 MiB: the training
folders stay in ``work``.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from models import load_checkpoint, save_checkpoint
from training.ablations.job import DONE_FILE, ZOOM_FILE, start_job
from training.ablations.plan import Run, config_for, recipe
from training.evaluation.evaluate import write_json
from training.evaluation.zoom_out_set import ensure_zoom_out_set
from training.gpu_lease.plan import PROVISIONAL_EPOCHS, fit_epochs
from training.loop.run_log import read_rows
from training.processes import stop_groups

CALIBRATION_EPOCHS = 2
WRITE_EVERY_S = 15.0
RESTART_S = 45.0         # a run's start-up after the calibration (caching frames, first batches)
FINAL_MARGIN_S = 45.0    # scoring the zoom-out set and the last writes, after the last epoch


@dataclass
class RunState:
    run: Run
    folder: Path
    proc: subprocess.Popen | None = None
    epochs: int = PROVISIONAL_EPOCHS
    epoch_seconds: float | None = None
    status: str = "waiting"   # waiting, calibrating, training, finished, failed, stopped at the deadline
    returned: list[str] = field(default_factory=list)

    @property
    def log(self) -> Path:
        return self.folder / "log.txt"

    def rows(self) -> list[dict]:
        return read_rows(self.folder / "train")


def start_run(state: RunState, data: str, device: str, workers: int, zoom: Path | None, resume: bool) -> None:
    """Start (or resume) one run as a child in its own process group, at ``state.epochs``."""
    cfg = config_for(state.run, recipe(data, state.epochs, device, workers), str(state.folder / "train"))
    state.proc = start_job(cfg, state.folder, resume, zoom, checkpoint="best")


def calibrated(state: RunState) -> float | None:
    """The run's epoch time side by side: its last calibration epoch (the first includes start-up)."""
    rows = state.rows()
    return float(rows[CALIBRATION_EPOCHS - 1]["seconds"]) if len(rows) >= CALIBRATION_EPOCHS else None


def report(states: list[RunState], started: float, deadline: float, phase: str) -> dict:
    """What ``results.json`` holds: every run's status, epochs, curve, best val and zoom-out
    figures and the end of its log, so a lease cut short still says what it did."""
    runs = {}
    for s in states:
        rows = s.rows()
        best = max(rows, key=lambda r: r.get("val_ap50", -1), default=None)
        zoom_path = s.folder / ZOOM_FILE
        runs[s.run.name] = {
            "what": s.run.what, "group": s.run.group, "overrides": {k: str(v) for k, v in s.run.overrides.items()},
            "status": s.status, "epochs_planned": s.epochs, "epochs_done": len(rows),
            "epoch_seconds_side_by_side": s.epoch_seconds, "best_epoch": best and best.get("epoch"),
            "best_val": best and {k: v for k, v in best.items() if k.startswith("val_")},
            "zoom_out": json.loads(zoom_path.read_text()) if zoom_path.is_file() else None,
            "curve": [{k: r.get(k) for k in ("epoch", "seconds", "loss_total", "val_ap50", "val_ap50_95",
                                              "val_alarm_frames_r90")} for r in rows],
            "returned": s.returned, "log_tail": _tail(s.log),
        }
    return {"phase": phase, "minutes_elapsed": round((time.time() - started) / 60, 2),
            "minutes_left": round((deadline - time.time()) / 60, 2), "runs": runs}


def _tail(path: Path, lines: int = 8) -> list[str]:
    try:
        return path.read_text(errors="replace").splitlines()[-lines:]
    except OSError:
        return []


def bring_back(state: RunState, out: Path) -> None:
    """Copy a kept run's best checkpoint to ``out`` in fp16 (a lease returns files of <= 16 MiB)."""
    best = state.folder / "train" / "best.safetensors"
    if state.run.keep_weights and best.is_file():
        ckpt = load_checkpoint(best)
        target = out / f"{state.run.name}.safetensors"
        save_checkpoint(target, ckpt.model, {**ckpt.metadata, "lease_status": state.status}, half=True)
        state.returned = [target.name]


def run_lease(runs: list[Run], data: str, out: Path, work: Path, minutes: float, device: str = "cuda",
              workers: int = 2, say: Callable[[str], None] = print,
              provisional_epochs: int = PROVISIONAL_EPOCHS) -> dict:
    """Calibrate, fit, train and score ``runs`` within ``minutes``; the results go to
    ``out/results.json`` as they come (see the module's docstring). Returns what it wrote."""
    started = time.time()
    deadline = started + minutes * 60
    out.mkdir(parents=True, exist_ok=True)
    work.mkdir(parents=True, exist_ok=True)
    zoom = ensure_zoom_out_set(Path(data), work / "zoomout-val")
    say(f"zoom-out set ready ({time.time() - started:.0f} s)")
    states = [RunState(r, work / r.name, epochs=provisional_epochs) for r in runs]
    results = out / "results.json"
    phase = "calibrating"
    try:
        for s in states:
            s.folder.mkdir(parents=True, exist_ok=True)
            start_run(s, data, device, workers, None, resume=False)
            s.status = "calibrating"
        say(f"started {len(states)} runs side by side to time their epochs")
        while any(s.epoch_seconds is None and s.status == "calibrating" for s in states):
            time.sleep(2.0)
            for s in states:
                if s.status == "calibrating" and s.epoch_seconds is None:
                    s.epoch_seconds = calibrated(s)
                    if s.proc.poll() is not None and s.epoch_seconds is None:
                        s.status = "failed"
            if time.time() > deadline - FINAL_MARGIN_S - RESTART_S:
                break
        stop_groups([s.proc for s in states if s.proc is not None])
        timed = {s.run.name: s.epoch_seconds for s in states if s.epoch_seconds}
        if not timed:
            say("no run finished its calibration epochs: see the logs in results.json")
            phase = "calibration failed"
        else:
            left = deadline - time.time() - RESTART_S - FINAL_MARGIN_S
            done = {s.run.name: len(s.rows()) for s in states}
            fitted = fit_epochs(timed, {s.run.name: s.run.group for s in states}, left, done)
            for s in states:
                if s.run.name in fitted:
                    s.epochs = fitted[s.run.name]
                    start_run(s, data, device, workers, zoom, resume=True)
                    s.status = "training"
            say("epochs fitted to the time left: " + ", ".join(f"{k} {v}" for k, v in fitted.items()))
            phase = "training"
            next_write = 0.0
            while any(s.status == "training" for s in states):
                time.sleep(1.0)
                for s in states:
                    if s.status == "training" and s.proc.poll() is not None:
                        s.status = "finished" if s.proc.returncode == 0 and (s.folder / DONE_FILE).is_file() else "failed"
                        bring_back(s, out)
                        say(f"{s.run.name}: {s.status}")
                if time.time() >= deadline:
                    late = [s for s in states if s.status == "training"]
                    stop_groups([s.proc for s in late], grace_s=10)
                    for s in late:
                        s.status = "stopped at the deadline"
                        bring_back(s, out)
                if time.time() >= next_write:
                    write_json(results, report(states, started, deadline, phase))
                    next_write = time.time() + WRITE_EVERY_S
            phase = "done"
    finally:  # an outer limit (SIGTERM, see exit_on_sigterm) or Ctrl-C: nothing trains on unattended
        stop_groups([s.proc for s in states if s.proc is not None], grace_s=10)
        for s in states:
            if s.status in ("training", "calibrating"):
                s.status = f"stopped ({phase})"
        write_json(results, report(states, started, deadline, phase))
    return json.loads(results.read_text())
