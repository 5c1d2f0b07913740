"""A finished variant's compact record, kept in git so that the study outlives its work folder.

A study's work folder (``runs/...``, ignored by git) has been lost twice with a new checkout,
taking finished fine-tunes with it; the study then had to start again. A study spans several
sittings on two CPU cores, so every variant that finishes is copied, as soon as it finishes,
into an archive folder that is committed (``assets/pruning-study/<study>/``):

- ``done.json`` (as in the work folder);
- ``<run>/last.safetensors``: the final EMA weights, the ones the study scores, stored fp16
  (half the size; the shipped models are stored the same way), with their metadata;
- ``<run>/results.csv`` and ``<run>/train_config.json``: the curve and the recipe;
- ``before_training.json``: the pruned network's val figures before fine-tuning, so that the
  pruned starting point (another checkpoint as large) need not be kept;
- ``provenance.json`` when the variant has one (a run copied into the study, not run by it).

About 2 MB a variant at width 0.25 and ratio 0.5. The archive has the work folder's layout,
so a variant is read from it exactly as from the work folder; a variant archived is done,
whatever the work folder holds, and it is scored from the archive: every finished variant in
fp16, so that no cell is scored in another precision than the rest (the report archives the
finished ones first; only a run still in progress is scored from the work folder). The
``train_config.json`` kept names the work-folder paths the run had (``out``, ``init_weights``);
they are a record, not read again. The optimiser state
of a run still in progress is not archived here: it is several times larger, and a run cut
off resumes from the work folder when that survives, else from what ``--carry`` kept
(``prune_study.carry``, meant for the long control), else starts again.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

from models import load_checkpoint, save_checkpoint
from training.durable import flush_folder, flush_tree
from training.prune_study.runner import StudySettings, VariantPaths, paths
from training.prune_study.variants import SCRATCH, Variant

BEFORE_TRAINING = "before_training.json"
KEPT = ("results.csv", "train_config.json")
PROVENANCE = "provenance.json"


def archive_variant(settings: StudySettings, v: Variant) -> Path:
    """Copy a finished variant's compact record into the archive, all at once: it is built in
    a temporary folder beside its place, flushed to disk, and renamed there, so that a crash
    never leaves a half-written record that would count as done. A record that would lack a
    part (curve, recipe, the pruned start) is refused: once archived it counts as done for
    good, and the work folder that could mend it may be gone by then."""
    from training.prune_study.scoring import evaluate  # scoring imports the runner, as this module does

    assert settings.archive is not None
    source = paths(settings, v)
    needed = [source.done, source.run / "last.safetensors", *(source.run / n for n in KEPT)]
    if v.method != SCRATCH:
        needed.append(source.start)
    missing = [str(f) for f in needed if not f.is_file()]
    if missing:
        raise ValueError(f"{source.folder}: cannot archive, missing {', '.join(missing)}")
    settings.archive.mkdir(parents=True, exist_ok=True)
    for stale in settings.archive.glob(f".{v.name}.*"):  # left by an archiving that was killed
        shutil.rmtree(stale, ignore_errors=True)
    final = settings.archive / v.name
    with tempfile.TemporaryDirectory(dir=settings.archive, prefix=f".{v.name}.") as tmp:
        staged = VariantPaths(Path(tmp) / v.name)
        staged.run.mkdir(parents=True)
        ckpt = load_checkpoint(source.run / "last.safetensors")
        save_checkpoint(staged.run / "last.safetensors", ckpt.model, ckpt.metadata, half=True)
        for name in KEPT:
            shutil.copy2(source.run / name, staged.run / name)
        if (source.folder / PROVENANCE).is_file():
            shutil.copy2(source.folder / PROVENANCE, staged.folder / PROVENANCE)
        if v.method != SCRATCH:
            before = {"val": evaluate(source.start, settings.data, "val")}
            (staged.folder / BEFORE_TRAINING).write_text(json.dumps(before, indent=2))
        shutil.copy2(source.done, staged.done)  # last: the marker of a complete record
        flush_tree(staged.folder)
        if final.exists():  # an incomplete earlier copy: it has no done.json, so it never counted
            shutil.rmtree(final)
        staged.folder.rename(final)
        flush_folder(settings.archive)
    from training.prune_study.carry import drop  # lazily, as the runner imports both

    drop(settings, v)  # its progress, carried across sittings, is not needed any more
    return final
