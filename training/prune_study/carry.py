"""A run still in progress, carried from one sitting to the next in git.

The archive (``prune_study.archive``) keeps finished runs; a run cut off by the end of a
sitting resumes only from its work folder (``runs/...``, ignored by git), and a new checkout
has lost that folder three times. The from-scratch control (210 epochs, about three hours
on this CPU) has lost its progress that way twice. ``--carry`` copies what a resume needs
into ``<archive>/in-progress/<run>/`` when the runner stops (``--phase carry`` does it
alone, for runs stopped some other way); a later sitting restores it into an empty or older
work folder before the run starts, and the record is deleted once the run is archived.

What a resume needs, and nothing else:

- the start checkpoint (pruned weights, or the control's random initialisation): the runner
  would otherwise prune or initialise again;
- ``state.safetensors``, full precision: raw weights, EMA weights and the optimiser's
  moments. Rounding them to fp16 would make the resumed run another run;
- ``best.safetensors`` (the best epoch so far: not derivable from the state), and the small
  files: the curve, the recipe, the hard-negative weights.

``last.safetensors`` is left out: the trainer rewrites it from the state's EMA weights on
resume. For the 0.5-pruned network at width 0.25 the record is about 20 MB, so it is meant
for the one long run (the control), not for every fine-tune at every stop.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from pathlib import Path

from safetensors import safe_open

from training.loop.train_state import STATE_FILE
from training.prune_study.runner import StudySettings, VariantPaths, finished, paths
from training.prune_study.variants import Variant

IN_PROGRESS = "in-progress"
RECORD = "carried.json"
SKIPPED = ("last.safetensors",)  # rewritten from the state on resume
SKIPPED_SUFFIXES = (".png", ".tmp")  # plots are redrawn; a temporary is an interrupted write


def carried_paths(settings: StudySettings, v: Variant) -> VariantPaths | None:
    """The variant's carried record, or ``None`` when there is none (or no archive)."""
    if settings.archive is None:
        return None
    p = VariantPaths(settings.archive / IN_PROGRESS / v.name)
    return p if (p.folder / RECORD).is_file() else None


def epochs_done(run_dir: Path) -> int:
    """Epochs a run folder's training state records (0 without one). Reads the header only."""
    state = run_dir / STATE_FILE
    if not state.is_file():
        return 0
    try:
        with safe_open(str(state), framework="pt") as f:
            return int(f.metadata()["epoch"]) + 1
    except Exception as exc:  # safetensors raises several error types
        raise RuntimeError(f"{state}: cannot read the training state ({exc})") from None


def carry(settings: StudySettings, v: Variant) -> Path | None:
    """Copy the variant's progress into the archive, replacing an older record; ``None``
    when there is nothing newer to carry (finished, not started, or already carried).

    Built in a temporary folder beside its place and renamed there, like the archive's
    records: a sitting cut off while copying leaves the earlier record whole."""
    assert settings.archive is not None
    source = paths(settings, v)
    done = epochs_done(source.run)
    before = carried_paths(settings, v)
    if finished(settings, v) or not done or not source.start.is_file() or (
            before is not None and epochs_done(before.run) >= done):
        return None
    home = settings.archive / IN_PROGRESS
    home.mkdir(parents=True, exist_ok=True)
    for stale in home.glob(f".{v.name}.*"):  # left by a copy that was killed
        shutil.rmtree(stale, ignore_errors=True)
    final = home / v.name
    with tempfile.TemporaryDirectory(dir=home, prefix=f".{v.name}.") as tmp:
        staged = VariantPaths(Path(tmp) / v.name)
        staged.run.mkdir(parents=True)
        shutil.copy2(source.start, staged.start)
        for f in sorted(source.run.iterdir()):
            if f.is_file() and f.name not in SKIPPED and f.suffix not in SKIPPED_SUFFIXES:
                shutil.copy2(f, staged.run / f.name)
        if epochs_done(staged.run) != done:  # the run wrote a newer epoch while it was copied
            raise RuntimeError(f"{source.run}: the run is still training; carry it once it has stopped")
        (staged.folder / RECORD).write_text(json.dumps(
            {"variant": v.name, "epochs_done": done, "carried_at": time.strftime("%Y-%m-%d %H:%M:%S %Z")}))
        if final.exists():
            old = home / f".{v.name}.old"
            final.rename(old)
            staged.folder.rename(final)
            shutil.rmtree(old)
        else:
            staged.folder.rename(final)
    return final


def carry_unfinished(settings: StudySettings, variants: list[Variant]) -> list[str]:
    """Carry every unfinished variant that has trained further than its record; returns
    their names."""
    carried = []
    for v in variants:
        if carry(settings, v) is not None:
            carried.append(v.name)
            print(f"carried {v.name} ({epochs_done(paths(settings, v).run)} epochs) into "
                  f"{settings.archive / IN_PROGRESS}", flush=True)
    return carried


def restore(settings: StudySettings, v: Variant) -> bool:
    """Put the carried record into the work folder when the work folder has trained less
    (a new checkout: nothing at all). Returns whether it did; the run then resumes from it."""
    record = carried_paths(settings, v)
    if record is None:
        return False
    work = paths(settings, v)
    carried_epochs = epochs_done(record.run)
    if epochs_done(work.run) >= carried_epochs:
        return False
    # Copied over, not in place of, the work folder: a child's log.txt there is open already.
    # What the work folder keeps besides is older than the record and is caught up on resume
    # (``last``), or checked by its epoch (the hard-negative weights).
    shutil.copytree(record.folder, work.folder, dirs_exist_ok=True, ignore=shutil.ignore_patterns(RECORD))
    print(f"restored {v.name} from {record.folder} ({carried_epochs} epochs done)", flush=True)
    return True


def drop(settings: StudySettings, v: Variant) -> None:
    """Delete the variant's record once it is archived as finished."""
    record = carried_paths(settings, v)
    if record is not None:
        shutil.rmtree(record.folder)
