"""A training run carried from one sitting to the next in git.

A run folder (``runs/...``) is ignored by git, and a new checkout has lost it several
times, taking hours of CPU training with it. A run longer than a sitting therefore copies
what a resume needs into a *record*, a folder that is committed, when it stops; a later
sitting restores the record into a work folder that has trained less (a new checkout: none
at all) and resumes from it. ``polypscope train --carry DIR`` does this for one run, the
pruning study (``training.prune_study.carry``) for its unfinished variants.

What an unfinished run's record keeps, and little else:

- ``state.safetensors`` in full precision: raw weights, EMA weights and the optimiser's
  moments. Rounding them to fp16 would make the resumed run another run;
- the small files: the curve, the recipe, the hard-negative weights and crop pool;
- ``best.safetensors`` in fp16: the best epoch so far cannot be derived from the state,
  and a checkpoint is shipped in fp16 anyway;
- whatever else the caller names (a pruned run's start checkpoint).

``last.safetensors`` is left out: the trainer rewrites it from the state's EMA weights on
resume. A FINISHED run's record keeps ``last`` and ``best`` in fp16 and no state, a quarter
of the size: what follows a finished run (pruning, export) reads the checkpoints.

A record is written whole or not at all: built in a temporary folder beside its place,
flushed, and renamed there; the record it replaces is renamed aside first and deleted last,
and is found under that name if the copy is cut off in between.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from safetensors import safe_open

from models import load_checkpoint, save_checkpoint
from training.durable import flush_folder, flush_tree
from training.loop.recipe import PLACE_FIELDS, refuse_other_recipe
from training.loop.train_state import STATE_FILE
from training.loop.trainer import BEST_FILE, LAST_FILE, TrainConfig, checkpoint_epoch

RECORD = "carried.json"
PREVIOUS = ".previous"  # the record being replaced, until its successor is in place
SKIPPED_SUFFIXES = (".png", ".tmp")  # plots are redrawn; a temporary is an interrupted write
RESTORING = ".restoring-"  # prefix of a file being restored, renamed when whole
HALVED = (BEST_FILE, LAST_FILE)  # checkpoints a record keeps in fp16


def epochs_done(run_dir: Path) -> int:
    """Epochs a run folder records: its training state's (a header read), else its last
    checkpoint's; 0 for neither. An unreadable state raises ``RuntimeError`` naming it."""
    state = run_dir / STATE_FILE
    if not state.is_file():
        return max(0, checkpoint_epoch(run_dir / LAST_FILE) or 0)
    try:
        with safe_open(str(state), framework="pt") as f:
            return int(f.metadata()["epoch"]) + 1
    except Exception as exc:  # safetensors raises several error types
        raise RuntimeError(f"{state}: cannot read the training state ({exc})") from None


def find_record(folder: Path) -> Path | None:
    """The record at ``folder``, or under its previous name when a sitting ended while it
    was being replaced; ``None`` when there is none."""
    for candidate in (folder, folder.with_name(folder.name + PREVIOUS)):
        if (candidate / RECORD).is_file():
            return candidate
    return None


def record_epochs(record: Path, run_subdir: str = "") -> int:
    """A record's epochs; an unreadable one (a bad merge, a pointer file) counts as none, so
    that it is replaced, never trusted."""
    try:
        return epochs_done(record / run_subdir)
    except RuntimeError as err:
        print(f"warning: {err}: the carried record is unreadable and will be replaced", flush=True)
        return 0


def record_is_finished(record: Path) -> bool:
    try:
        return bool(json.loads((record / RECORD).read_text()).get("finished", False))
    except (OSError, ValueError):
        return False


def write_record(folder: Path, run_dir: Path, *, run_subdir: str = "", finished: bool = False,
                 extra: Sequence[Path] = ()) -> bool:
    """Copy ``run_dir``'s progress into the record at ``folder`` (the run's files under
    ``run_subdir`` in it, each of ``extra`` beside them), replacing an older record. Returns
    whether it wrote one: nothing is written when the run has not trained or the record is
    as far already. ``finished`` keeps the checkpoints instead of the training state."""
    done = epochs_done(run_dir)
    before = find_record(folder)
    if before is None and folder.is_dir() and any(folder.iterdir()):
        raise RuntimeError(f"{folder}: holds files that are not a carried run; not replaced")
    if not done or (before is not None and record_epochs(before, run_subdir) >= done
                    and record_is_finished(before) >= finished):
        return False
    home = folder.parent
    home.mkdir(parents=True, exist_ok=True)
    for stale in home.glob(f".{folder.name}.*"):  # left by a copy that was killed
        shutil.rmtree(stale, ignore_errors=True)
    aside = folder.with_name(folder.name + PREVIOUS)
    with tempfile.TemporaryDirectory(dir=home, prefix=f".{folder.name}.") as tmp:
        staged = Path(tmp) / folder.name
        (staged / run_subdir).mkdir(parents=True)
        for f in extra:
            shutil.copy2(f, staged / f.name)
        skipped = (STATE_FILE,) if finished else (LAST_FILE,)
        for f in sorted(run_dir.iterdir()):
            if not f.is_file() or f.name in skipped or f.suffix in SKIPPED_SUFFIXES:
                continue
            if f.name in HALVED:
                checkpoint = load_checkpoint(f)
                save_checkpoint(staged / run_subdir / f.name, checkpoint.model, checkpoint.metadata, half=True)
            else:
                shutil.copy2(f, staged / run_subdir / f.name)
        if epochs_done(staged / run_subdir) != done:  # the run wrote a newer epoch while it was copied
            raise RuntimeError(f"{run_dir}: the run is still training; carry it once it has stopped")
        (staged / RECORD).write_text(json.dumps(
            {"run": str(run_dir), "epochs_done": done, "finished": finished,
             "carried_at": time.strftime("%Y-%m-%d %H:%M:%S %Z")}))
        flush_tree(staged)
        if before == aside and folder.exists():  # a broken record where the whole one was aside
            shutil.rmtree(folder)
        elif folder.exists():
            if aside.exists():
                shutil.rmtree(aside)
            folder.rename(aside)
        staged.rename(folder)
        flush_folder(home)
    if aside.exists():
        shutil.rmtree(aside)
    return True


def restore_record(record: Path, target: Path, run_subdir: str = "") -> None:
    """Copy the record's files over (not in place of) ``target``: a log open there stays
    open. Each is copied under a temporary name and renamed when whole, the training state
    last: a restore cut off half-way leaves the folder's own state, and is simply done again.
    A finished record has no state: the work folder's older one is deleted, or a resume
    would go on from it instead of from the restored checkpoints."""
    files = [f for f in record.rglob("*") if f.is_file() and f.name != RECORD]
    files.sort(key=lambda f: f.name == STATE_FILE)  # the state last: it says how far the folder is
    for f in files:
        destination = target / f.relative_to(record)
        destination.parent.mkdir(parents=True, exist_ok=True)
        for leftover in destination.parent.glob(RESTORING + "*"):
            leftover.unlink()
        staged = destination.with_name(RESTORING + destination.name)
        shutil.copy2(f, staged)
        os.replace(staged, destination)
    stale_state = target / run_subdir / STATE_FILE  # last, as the state would be: it says how far
    if not (record / run_subdir / STATE_FILE).is_file() and stale_state.is_file():
        stale_state.unlink()


def drop_record(folder: Path) -> None:
    """Delete the record (and a previous one left aside); a failure is reported, not raised."""
    for candidate in (folder, folder.with_name(folder.name + PREVIOUS)):
        if candidate.exists():
            try:
                shutil.rmtree(candidate)
            except OSError as err:
                print(f"warning: could not delete {candidate} ({err})", flush=True)


# -- one training run (``polypscope train --carry DIR``) ---------------------------------------

def restore_before_run(carry_dir: Path, out: Path, *, resume: bool, epochs_asked: int | None) -> None:
    """Before a ``--carry`` run: put the record into ``out`` when it is further along.
    Stops with one line (``SystemExit``) where going on would lose or mix runs: a record, or a
    run in ``out``, without ``--resume`` (starting afresh would replace it at the next carry);
    a record of another recipe than the run in ``out``; a ``DIR`` that is ``--out``, holds it
    or lies in it, or holds other files (a carry replaces the folder); an ``--epochs`` that
    would end the run before where it is, or lengthen a finished run that has no state left
    to go on from."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise SystemExit("--carry: a run of several processes is not carried; carry a one-process run")
    here, work = carry_dir.resolve(), out.resolve()
    if here == work or work in here.parents or here in work.parents:
        raise SystemExit(f"--carry {carry_dir}: must lie outside --out {out}, and not hold it (the record "
                         "is a folder of its own, to be committed)")
    record = find_record(carry_dir)
    if record is None and carry_dir.is_dir() and any(carry_dir.iterdir()):
        raise SystemExit(f"--carry {carry_dir}: holds files that are not a carried run; a carry would replace "
                         "them: name a new folder")
    done = epochs_done(out)
    if not resume:
        if record is not None:
            raise SystemExit(f"{record}: holds a carried run ({record_epochs(record)} epochs); add --resume to "
                             "go on with it, or delete that folder knowingly to start afresh")
        if done:
            raise SystemExit(f"{out}: holds a run ({done} epochs) that --carry would record; add --resume to "
                             "go on with it, or use another --out")
        return
    carried = 0 if record is None else record_epochs(record)
    if record is not None and carried:  # an unreadable record is replaced, not obeyed
        _refuse_another_run(record, out)
    restoring = carried > done
    if epochs_asked is not None:
        _refuse_epochs(epochs_asked, out, done, carried, restoring, record)
    if restoring:
        restore_record(record, out)
        print(f"restored {out} from {record} ({carried} epochs done)", flush=True)


def _refuse_another_run(record: Path, out: Path) -> None:
    """One record, one run: the record's recipe against the work folder's, whichever is
    further along (only where they run, and their length, may differ)."""
    saved = record / "train_config.json"
    try:
        recipe = TrainConfig.from_dict(json.loads(saved.read_text()))
    except (OSError, ValueError, TypeError) as err:
        raise SystemExit(f"{saved}: cannot read the carried run's recipe ({err})") from None
    try:
        refuse_other_recipe(out, dataclasses.replace(recipe, out=str(out)), PLACE_FIELDS + ("epochs",))
    except SystemExit as stop:
        raise SystemExit(f"{stop} (the carried record {record} is another run: use another --out or "
                         "another --carry)") from None


def _refuse_epochs(asked: int, out: Path, done: int, carried: int, restoring: bool, record: Path | None) -> None:
    """``--epochs`` on resume may lengthen a run, never cut it at or before where it is (a
    finished record would replace the state), and may lengthen a finished run only from a
    training state: a finished record keeps none."""
    furthest = max(done, carried)
    if restoring:
        finished = record_is_finished(record)
        has_state = not finished  # a record keeps the state exactly while it is unfinished
    else:
        saved = out / "train_config.json"
        planned = json.loads(saved.read_text()).get("epochs") if saved.is_file() else None
        finished, has_state = planned == done, (out / STATE_FILE).is_file()
    if asked < furthest or (asked == furthest and not finished):
        raise SystemExit(f"--epochs {asked}: the run has done {furthest} epochs already")
    if asked > furthest and finished and not has_state:
        raise SystemExit(f"{record or out}: the run finished at {furthest} epochs and keeps no training state "
                         "to go on from; train a warm restart from its last.safetensors (--init-weights) instead")


def carry_after_run(out: Path, carry_dir: Path, epochs: int) -> bool:
    """After a ``--carry`` run, however it ended: the record follows the run folder (the
    training state while unfinished, fp16 checkpoints once finished, that is once ``last``
    holds the final epoch). Returns False when the carry failed: that is reported, never
    allowed to hide why training stopped."""
    try:
        done = epochs_done(out)
        finished = done >= epochs and checkpoint_epoch(out / LAST_FILE) == done
        if write_record(carry_dir, out, finished=finished):
            state = "finished" if finished else "to go on with --resume --carry"
            print(f"carried {out} ({done} of {epochs} epochs, {state}) into {carry_dir}: commit that folder",
                  flush=True)
        return True
    except (OSError, RuntimeError, ValueError) as err:
        print(f"could not carry {out} into {carry_dir}: {err}", file=sys.stderr, flush=True)
        return False
