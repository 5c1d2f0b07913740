"""The pruning study's runs still in progress, carried from one sitting to the next in git.

The archive (``prune_study.archive``) keeps finished runs; a run cut off by the end of a
sitting resumes only from its work folder (``runs/...``, ignored by git), and a new checkout
has lost that folder three times. The from-scratch control (210 epochs, about three hours
on this CPU) has lost its progress that way twice. ``--carry`` copies what a resume needs
into ``<archive>/in-progress/<run>/`` when the runner stops (``--phase carry`` does it
alone, for runs stopped some other way); a later sitting restores it into a work folder
that has trained less (a new checkout: none at all) before the run starts, and the record
is deleted once the run is archived.

The record is ``training.loop.carry``'s (the full-precision training state, the small
files, ``best`` in fp16), with the run's files under the run's sub-folder and, for a pruned
run, its start checkpoint beside them: the pruned network, which the archive scores before
fine-tuning (pruning again need not give the same one). The control's start, its random
initialisation, is left out: the runner makes it again from the seed, and the run resumes
from the state, not from it. For the 0.5-pruned network at width 0.25 a control's record is
about 18 MB, so it is meant for the one long run, carried once at the end of each sitting
it trains in.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

from training.loop.carry import drop_record, epochs_done, find_record, record_epochs, restore_record, write_record
from training.loop.recipe import PLACE_FIELDS, refuse_other_recipe
from training.loop.trainer import TrainConfig
from training.prune_study.runner import StudySettings, VariantPaths, finished, paths
from training.prune_study.variants import SCRATCH, Variant

IN_PROGRESS = "in-progress"


def _home(settings: StudySettings) -> Path:
    assert settings.archive is not None
    return settings.archive / IN_PROGRESS


def carried_paths(settings: StudySettings, v: Variant) -> VariantPaths | None:
    """The variant's carried record, or ``None`` when there is none (or no archive). A
    record caught half-way through its replacement is found under its previous name."""
    if settings.archive is None:
        return None
    record = find_record(_home(settings) / v.name)
    return None if record is None else VariantPaths(record)


def carry(settings: StudySettings, v: Variant) -> Path | None:
    """Copy the variant's progress into the archive, replacing an older record; ``None``
    when there is nothing newer to carry (finished, not started, or already carried)."""
    source = paths(settings, v)
    pruned = v.method != SCRATCH
    if finished(settings, v) or (pruned and not source.start.is_file()):
        return None
    final = _home(settings) / v.name
    if not write_record(final, source.run, run_subdir=source.run.name, extra=[source.start] if pruned else []):
        return None
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
    recipe from a start checkpoint, the record's own standing in) stops the run, naming it:
    resuming it would mix two recipes in one run, and starting afresh would replace it at
    the next carry."""
    record = carried_paths(settings, v)
    if record is None:
        return False
    work = paths(settings, v)
    carried_epochs = record_epochs(record.folder, record.run.name)
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
    restore_record(record.folder, work.folder, record.run.name)
    print(f"restored {v.name} from {record.folder} ({carried_epochs} epochs done)", flush=True)
    return True


def drop(settings: StudySettings, v: Variant) -> None:
    """Delete the variant's record once it is archived as finished (a failure to delete is
    reported: the run is archived all the same, and a stale record is never restored over a
    finished run)."""
    if settings.archive is not None:
        drop_record(_home(settings) / v.name)
