"""One training run as a child process: train (or resume), then score one of its checkpoints
on the zoom-out set. A GPU lease and the CPU campaign start their runs this way, each in its
own process group, so a run can be stopped whole and resumed later from its saved state.

The job is a JSON file beside the run folder: the training configuration, whether to resume,
the zoom-out set and which checkpoint to score (``best`` on val, or ``last``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from training.evaluation.evaluate import write_json
from training.loop.trainer import TrainConfig
from training.processes import start_group

DONE_FILE = "done"
ZOOM_FILE = "zoom_out.json"


def child_command(job: Path) -> list[str]:
    """The command a run's child process executes."""
    return [sys.executable, "-m", "training.ablations", "job", "--job", str(job)]


def start_job(cfg: TrainConfig, folder: Path, resume: bool, zoom: Path | None, checkpoint: str) -> subprocess.Popen:
    """Write ``folder/job.json`` and start its child in a process group; its output goes to
    ``folder/log.txt``. The run itself trains in ``cfg.out``."""
    folder.mkdir(parents=True, exist_ok=True)
    job = folder / "job.json"
    job.write_text(json.dumps({"config": cfg.to_dict(), "resume": resume, "zoom": str(zoom) if zoom else None,
                               "checkpoint": checkpoint}))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(Path.cwd()), os.environ.get("PYTHONPATH")]))}
    return start_group(child_command(job), folder / "log.txt", env=env)


def run_job(job_path: Path) -> int:
    """The child: train (or resume) one run, score the chosen checkpoint on the zoom-out set
    (as ``val`` scores a folder: false alarms on crops mined from it too), mark it done."""
    from training.loop.trainer import Trainer
    from training.release.ship import score

    job = json.loads(Path(job_path).read_text())
    cfg = TrainConfig.from_dict(job["config"])
    Trainer(cfg, resume=job["resume"], show_progress=False).run()
    out = Path(cfg.out)
    if job.get("zoom"):
        weights = out / f"{job.get('checkpoint', 'best')}.safetensors"
        metrics, _ = score(weights, Path(job["zoom"]), None, bootstrap=0)
        write_json(out.parent / ZOOM_FILE, {"checkpoint": weights.name,
                                            **{k: v for k, v in metrics.items() if not isinstance(v, list)}})
    (out.parent / DONE_FILE).write_text("done\n")
    return 0
