"""A run still in progress, carried from one sitting to the next in git.

The archive (``prune_study.archive``) keeps finished runs; a run cut off by the end of a
sitting resumes only from its work folder (``runs/...``, ignored by git), and a new checkout
has lost that folder three times. The from-scratch control (210 epochs, about three hours
on this CPU) has lost its progress that way twice. ``--carry`` copies what a resume needs
into ``<archive>/in-progress/<run>/`` when the runner stops (``--phase carry`` does it
alone, for runs stopped some other way); a later sitting restores it into a work folder
that has trained less (a new checkout: none at all) before the run starts, and the record
is deleted once the run is archived.

What a resume needs, and little else:

- ``state.safetensors``, full precision: raw weights, EMA weights and the optimiser's
  moments. Rounding them to fp16 would make the resumed run another run;
- the small files: the curve, the recipe, the hard-negative weights;
- the start checkpoint of a pruned run (the pruned network, which the archive scores
  before fine-tuning; pruning again need not give the same one). The control's start, its
  random initialisation, is left out: the runner makes it again from the seed, and the
  run resumes from the state, not from it;
- ``best.safetensors`` in fp16: the best epoch so far cannot be derived from the state, but
  the study never reads it (it scores the last epoch), so it is kept the way the archive
  keeps weights.

``last.safetensors`` is left out: the trainer rewrites it from the state's EMA weights on
resume. For the 0.5-pruned network at width 0.25 a control's record is about 18 MB, so it
is meant for the one long run, carried once at the end of each sitting it trains in.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from safetensors import safe_open

from models import load_checkpoint, save_checkpoint
from training.loop.recipe import PLACE_FIELDS, refuse_other_recipe
from training.loop.train_state import STATE_FILE
from training.loop.trainer import LAST_FILE, TrainConfig, checkpoint_epoch
from training.prune_study.archive import flush_folder, flush_tree
from training.prune_study.runner import StudySettings, VariantPaths, finished, paths
from training.prune_study.variants import SCRATCH, Variant

IN_PROGRESS = "in-progress"
RECORD = "carried.json"
PREVIOUS = ".previous"  # the record being replaced, until its successor is in place
BEST = "best.safetensors"
SKIPPED = (LAST_FILE,)  # rewritten from the state on resume
SKIPPED_SUFFIXES = (".png", ".tmp")  # plots are redrawn; a temporary is an interrupted write
RESTORING = ".restoring-"  # prefix of a file being restored, renamed when whole


def _home(settings: StudySettings) -> Path:
    assert settings.archive is not None
    return settings.archive / IN_PROGRESS


def carried_paths(settings: StudySettings, v: Variant) -> VariantPaths | None:
    """The variant's carried record, or ``None`` when there is none (or no archive). A
    record caught half-way through its replacement is found under its previous name."""
    if settings.archive is None:
        return None
    for name in (v.name, v.name + PREVIOUS):
        p = VariantPaths(_home(settings) / name)
        if (p.folder / RECORD).is_file():
            return p
    return None


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


def _record_epochs(record: VariantPaths) -> int:
    """A record's epochs; an unreadable one (a bad merge, a pointer file) counts as none, so
    that it is replaced, never trusted."""
    try:
        return epochs_done(record.run)
    except RuntimeError as err:
        print(f"warning: {err}: the carried record is unreadable and will be replaced", flush=True)
        return 0


def carry(settings: StudySettings, v: Variant) -> Path | None:
    """Copy the variant's progress into the archive, replacing an older record; ``None``
    when there is nothing newer to carry (finished, not started, or already carried).

    Built in a temporary folder beside its place, flushed, and renamed there; the record it
    replaces is renamed aside first and deleted last, and is found under that name if the
    copy is cut off in between: a sitting that ends mid-copy keeps one whole record."""
    source = paths(settings, v)
    done = epochs_done(source.run)
    before = carried_paths(settings, v)
    pruned_start_missing = v.method != SCRATCH and not source.start.is_file()
    if finished(settings, v) or not done or pruned_start_missing or (
            before is not None and _record_epochs(before) >= done):
        return None
    home = _home(settings)
    home.mkdir(parents=True, exist_ok=True)
    for stale in home.glob(f".{v.name}.*"):  # left by a copy that was killed
        shutil.rmtree(stale, ignore_errors=True)
    final, aside = home / v.name, home / (v.name + PREVIOUS)
    with tempfile.TemporaryDirectory(dir=home, prefix=f".{v.name}.") as tmp:
        staged = VariantPaths(Path(tmp) / v.name)
        staged.run.mkdir(parents=True)
        if v.method != SCRATCH:
            shutil.copy2(source.start, staged.start)
        for f in sorted(source.run.iterdir()):
            if not f.is_file() or f.name in SKIPPED or f.suffix in SKIPPED_SUFFIXES:
                continue
            if f.name == BEST:
                best = load_checkpoint(f)
                save_checkpoint(staged.run / BEST, best.model, best.metadata, half=True)
            else:
                shutil.copy2(f, staged.run / f.name)
        if epochs_done(staged.run) != done:  # the run wrote a newer epoch while it was copied
            raise RuntimeError(f"{source.run}: the run is still training; carry it once it has stopped")
        (staged.folder / RECORD).write_text(json.dumps(
            {"variant": v.name, "epochs_done": done, "carried_at": time.strftime("%Y-%m-%d %H:%M:%S %Z")}))
        flush_tree(staged.folder)
        if final.exists():
            if aside.exists():
                shutil.rmtree(aside)
            final.rename(aside)
        staged.folder.rename(final)
        flush_folder(home)
    if aside.exists():
        shutil.rmtree(aside)
    return final


def carry_unfinished(settings: StudySettings, variants: list[Variant]) -> list[str]:
    """Carry every unfinished variant that has trained further than its record; returns
    their names. One that cannot be carried is reported and skipped, never allowed to stop
    the others or to hide why the runner stopped."""
    carried = []
    for v in variants:
        try:
            if carry(settings, v) is None:
                continue
        except (OSError, RuntimeError, ValueError) as err:
            print(f"could not carry {v.name}: {err}", flush=True)
            continue
        carried.append(v.name)
        print(f"carried {v.name} ({epochs_done(paths(settings, v).run)} epochs) into {_home(settings)}", flush=True)
    return carried


def restore(settings: StudySettings, v: Variant, recipe_for: Callable[[Path], TrainConfig]) -> bool:
    """Put the carried record into the work folder when the work folder has trained less.
    Returns whether it did; the run then resumes from it.

    A record trained under another recipe than today's (``recipe_for(start)``: the run's
    recipe from a start checkpoint, the record's own standing in) stops the run, naming it: resuming it would mix two recipes in one run, and starting
    afresh would replace it at the next carry. Files are copied over, not in place of, the
    work folder (a child's ``log.txt`` there is open already), each under a temporary name
    and renamed when whole, the training state last: a restore cut off half-way leaves the
    work folder's own state, and is simply done again."""
    record = carried_paths(settings, v)
    if record is None:
        return False
    carried_epochs = _record_epochs(record)
    work = paths(settings, v)
    if not carried_epochs or epochs_done(work.run) >= carried_epochs:
        return False
    try:
        # As strict as the trainer's own check on resume: the record's start stands in for
        # loading (a new checkout has no pruned network yet), the work folder's is compared.
        asked = dataclasses.replace(recipe_for(record.start), init_weights=str(work.start))
        refuse_other_recipe(record.run, asked, PLACE_FIELDS)
    except SystemExit as stop:
        raise SystemExit(f"{stop} (it is the carried progress of {v.name}, {record.folder}: delete that "
                         "folder knowingly to start the run afresh under today's settings)") from None
    files = [f for f in record.folder.rglob("*") if f.is_file() and f.name != RECORD]
    files.sort(key=lambda f: f.name == STATE_FILE)  # the state last: it says how far the folder is
    for f in files:
        target = work.folder / f.relative_to(record.folder)
        target.parent.mkdir(parents=True, exist_ok=True)
        for leftover in target.parent.glob(RESTORING + "*"):
            leftover.unlink()
        staged = target.with_name(RESTORING + target.name)
        shutil.copy2(f, staged)
        os.replace(staged, target)
    print(f"restored {v.name} from {record.folder} ({carried_epochs} epochs done)", flush=True)
    return True


def drop(settings: StudySettings, v: Variant) -> None:
    """Delete the variant's record once it is archived as finished (a failure to delete is
    reported: the run is archived all the same, and a stale record is never restored over a
    finished run)."""
    if settings.archive is None:
        return
    for folder in (_home(settings) / v.name, _home(settings) / (v.name + PREVIOUS)):
        if folder.exists():
            try:
                shutil.rmtree(folder)
            except OSError as err:
                print(f"warning: could not delete {folder} ({err}); {v.name} is archived, so it is not used",
                      flush=True)

