"""Kill -9 at every point of an epoch's checkpoint writes (issue 10, section 3).

One helper process forks a child per kill point; the child resumes a tiny one-epoch run,
trains epoch 2 and SIGKILLs itself at one step of one atomic write (temporary created,
data written, fsync'd, renamed) of every file the epoch writes, in its order: the log
(results.jsonl, results.csv), state, last and best, then the plots. Afterwards the run
folder must hold only complete files, and ``train --resume`` must carry on from what the
kill left (saying from what), remove the stale temporary and end with every file at
epoch 2. Validation is replaced by fixed metrics that improve each epoch, so ``best`` is
written every epoch whatever the CPU's rounding.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import cv2
import pytest

from app.cli import main
from models import load_checkpoint
from models.checkpoint import TEMP_PATTERN, remove_stale_temporaries
from training.evaluation.evaluate import DetectionEvaluator
from training.loop import trainer
from training.loop.train_state import load_train_state
from training.loop.trainer import TrainConfig, Trainer

from .conftest import REPO
from .synthetic import write_kvasir_like

STEPS = ("created", "written", "fsynced", "renamed")
# Every file an epoch writes, in the order it writes them.
TARGETS = ("results.jsonl", "results.csv", "state.safetensors", "last.safetensors", "best.safetensors",
           "pr_curve.png", "results.png")
POINTS = [(target, step) for target in TARGETS for step in STEPS]
AP50 = {1: 0.1, 2: 0.2}


def fake_evaluation(ap50: float):
    """Stands in for ``evaluate_model``: fixed metrics, no inference."""

    def evaluate(model, cache, size, class_names, **_):
        return {"ap50": ap50, "ap50_95": ap50 / 2, "f1": ap50}, DetectionEvaluator(cache.samples, class_names)

    return evaluate


def kill_at(target: str, step: str) -> None:
    """Make this process SIGKILL itself at ``step`` of the atomic write of ``target``
    (hooks on the tempfile/os calls that ``models.checkpoint.atomic_write_bytes`` makes)."""
    prefix = f".{target}."
    current: dict[str, str | None] = {"tmp": None}
    real_mkstemp, real_fsync, real_replace = tempfile.mkstemp, os.fsync, os.replace

    def die_at(now: str) -> None:
        if now == step and current["tmp"] is not None:
            os.kill(os.getpid(), signal.SIGKILL)

    def mkstemp(*args, **kwargs):
        fd, tmp = real_mkstemp(*args, **kwargs)
        current["tmp"] = tmp if Path(tmp).name.startswith(prefix) else None
        die_at("created")
        return fd, tmp

    def fsync(fd):
        die_at("written")  # written and flushed to the OS, not yet forced to disk
        real_fsync(fd)
        die_at("fsynced")

    def replace(src, dst):
        real_replace(src, dst)
        if str(src) == current["tmp"]:
            die_at("renamed")

    tempfile.mkstemp, os.fsync, os.replace = mkstemp, fsync, replace


KILLER = """
import json, os, shutil, signal, sys, traceback
from pathlib import Path
import matplotlib
import torch
import torch._dynamo  # noqa: F401 (imported by the first optimiser: import once here, not in every child)
torch.set_num_threads(1)  # no thread pool is ever started, so forking below is safe
matplotlib.use("Agg")
import matplotlib.pyplot  # noqa: F401
from tests.test_faults_training import AP50, POINTS, fake_evaluation, kill_at
from training.loop import trainer
from training.loop.trainer import TrainConfig, Trainer
base, work = Path(sys.argv[1]), Path(sys.argv[2])
trainer.evaluate_model = fake_evaluation(AP50[2])
killed = {}
for target, step in POINTS:
    folder = work / f"{target}-{step}"
    shutil.copytree(base, folder)
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            kill_at(target, step)
            cfg = TrainConfig.from_dict(json.loads((folder / "train_config.json").read_text()))
            cfg.out = str(folder)
            Trainer(cfg, resume=True, show_progress=False).run()  # returns only if no kill came
        except BaseException:
            traceback.print_exc()
            code = 1
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    killed[folder.name] = os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
print(json.dumps(killed))
"""


def _cfg(data: Path, out: Path) -> TrainConfig:
    # One torch thread: on shared cores, two spinning threads make these tiny steps ten times slower.
    return TrainConfig(data=str(data), out=str(out), width=0.125, img=64, epochs=2, batch=4, workers=0,
                       close_mosaic=1, warmup_epochs=0.5, threads=1)


pytestmark = pytest.mark.usefixtures("restore_torch_threads")  # `threads=1` runs set it for the process


@pytest.fixture(scope="module")
def base_run(tmp_path_factory) -> Path:
    """A two-epoch run stopped cleanly after epoch 1 (every file written)."""
    data = write_kvasir_like(tmp_path_factory.mktemp("data") / "kv", n=12)
    out = tmp_path_factory.mktemp("runs") / "base"
    end_epoch = Trainer._end_epoch

    def stop_after_epoch(self, epoch, losses, seconds):
        end_epoch(self, epoch, losses, seconds)
        raise KeyboardInterrupt

    with pytest.MonkeyPatch.context() as m:
        m.setattr(trainer, "evaluate_model", fake_evaluation(AP50[1]))
        m.setattr(Trainer, "_end_epoch", stop_after_epoch)
        with pytest.raises(KeyboardInterrupt):
            Trainer(_cfg(data, out), show_progress=False).run()
    return out


@pytest.fixture(scope="module")
def killed_runs(base_run, tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("killed")
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", KILLER, str(base_run), str(work)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    killed = json.loads(proc.stdout.strip().splitlines()[-1])
    assert killed == {f"{t}-{s}": True for t, s in POINTS}, (killed, proc.stderr[-3000:])
    return work


def assert_complete_files(folder: Path) -> None:
    """Every file under its final name reads completely; only temporaries may be partial."""
    for path in folder.iterdir():
        if TEMP_PATTERN.match(path.name):
            continue
        if path.name == "state.safetensors":
            load_train_state(folder)
        elif path.suffix == ".safetensors":
            load_checkpoint(path)
        elif path.suffix == ".json":
            json.loads(path.read_text())
        elif path.suffix == ".jsonl":
            [json.loads(line) for line in path.read_text().splitlines()]
        elif path.suffix == ".csv":
            assert list(csv.DictReader(path.open()))
        elif path.suffix == ".png":
            assert cv2.imread(str(path)) is not None, path
        else:
            pytest.fail(f"unexpected file {path}")


def landed(target: str, step: str) -> set[str]:
    """The epoch-2 files complete under their final name when the kill came."""
    done = set(TARGETS[: TARGETS.index(target)])
    return done | {target} if step == "renamed" else done


@pytest.mark.parametrize(("target", "step"), POINTS, ids=[f"{t}-{s}" for t, s in POINTS])
def test_kill_during_checkpoint_writes_leaves_a_resumable_run(killed_runs, target, step, capsys, monkeypatch):
    folder = killed_runs / f"{target}-{step}"
    stale = sorted(p.name for p in folder.iterdir() if TEMP_PATTERN.match(p.name))
    assert [n.startswith(f".{target}.") for n in stale] == ([] if step == "renamed" else [True])
    assert_complete_files(folder)
    new = landed(target, step)
    state_epoch = 2 if "state.safetensors" in new else 1
    assert load_train_state(folder).epoch + 1 == state_epoch

    monkeypatch.setattr(trainer, "evaluate_model", fake_evaluation(AP50[2]))
    assert main(["train", "--resume", "--out", str(folder), "--quiet"]) == 0
    err = capsys.readouterr().err
    assert f"resuming from {folder / 'state.safetensors'} (epoch {state_epoch} done)" in err
    assert ("removed 1 temporary file(s)" in err) == bool(stale) and all(n in err for n in stale)
    rewritten = {name for name in ("last", "best") if f"{name}.safetensors was older than state" in err}
    landed_checkpoints = {name.removesuffix(".safetensors") for name in new}
    assert rewritten == ({"last", "best"} - landed_checkpoints if "state.safetensors" in new else set())
    assert not [p for p in folder.iterdir() if TEMP_PATTERN.match(p.name)]
    for name in ("last", "best"):
        assert load_checkpoint(folder / f"{name}.safetensors").metadata["epoch"] == 2, name
    assert load_train_state(folder).epoch == 1
    assert [json.loads(r)["epoch"] for r in (folder / "results.jsonl").read_text().splitlines()] == [1, 2]


def test_resume_without_state_falls_back_to_last(base_run, tmp_path, capsys, monkeypatch):
    folder = tmp_path / "run"
    shutil.copytree(base_run, folder)
    (folder / "state.safetensors").unlink()  # stopped after last/best but before the state (the old order)
    monkeypatch.setattr(trainer, "evaluate_model", fake_evaluation(AP50[2]))
    assert main(["train", "--resume", "--out", str(folder), "--quiet"]) == 0
    err = capsys.readouterr().err
    assert (f"{folder / 'state.safetensors'} is missing: resuming from last.safetensors (epoch 1 done) "
            "with the optimiser restarted") in err
    assert load_checkpoint(folder / "last.safetensors").metadata["epoch"] == 2
    assert load_train_state(folder).epoch == 1
    assert [json.loads(r)["epoch"] for r in (folder / "results.jsonl").read_text().splitlines()] == [1, 2]


def test_nothing_to_resume_is_one_clear_line(base_run, tmp_path, capsys):
    folder = tmp_path / "run"
    folder.mkdir()
    shutil.copy(base_run / "train_config.json", folder)  # killed during epoch 1's first state write
    (folder / ".state.safetensors.k1ll3d_x.tmp").write_bytes(b"\0" * 64)
    rc = main(["train", "--resume", "--out", str(folder), "--quiet"])
    err = capsys.readouterr().err
    assert rc == 1 and err.strip().splitlines()[-1] == \
        f"error: {folder}: nothing to resume (no state.safetensors and no last.safetensors)"
    assert not (folder / ".state.safetensors.k1ll3d_x.tmp").exists()  # the 12 MB temporary is gone too


@pytest.mark.parametrize(("name", "ours"), [
    (".state.safetensors.a1b2c3d4.tmp", True),
    (".last.safetensors.zz_9q8w7.tmp", True),
    (".results.jsonl.0123abcd.tmp", True),
    ("notes.tmp", False),
    (".state.safetensors.short.tmp", False),
    (".state.safetensors.A1B2C3D4.tmp", False),
    ("last.safetensors", False),
])
def test_only_our_temporaries_are_removed(tmp_path, name, ours):
    (tmp_path / name).write_bytes(b"x")
    assert [p.name for p in remove_stale_temporaries(tmp_path)] == ([name] if ours else [])
    assert (tmp_path / name).exists() != ours


def test_a_fresh_start_removes_stale_temporaries_and_says_so(base_run, tmp_path, capsys):
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / ".best.safetensors.x9y8z7w6.tmp").write_bytes(b"\0" * 64)
    data = json.loads((base_run / "train_config.json").read_text())["data"]
    rc = main(["train", "--data", data, "--out", str(folder), "--width", "0.125", "--img", "64", "--epochs", "0",
               "--batch", "4", "--workers", "0", "--threads", "1", "--quiet"])
    err = capsys.readouterr().err
    assert rc == 0 and f"removed 1 temporary file(s) an interrupted write left in {folder}: " \
                       ".best.safetensors.x9y8z7w6.tmp" in err
    assert not (folder / ".best.safetensors.x9y8z7w6.tmp").exists()
