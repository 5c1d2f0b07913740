"""Figures of each finished (or interrupted) variant: val after training, the curve of the
run, and -- only when asked, once, for the final table -- test.

The checkpoint scored is the run's ``last.safetensors`` (its final EMA weights; the best epoch
on val would be picked on the very data that compares the cells), read from the study's
archive when the variant is archived (``prune_study.archive``). A run cut short is scored
from its last epoch so far and says how many epochs it had.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from models import load_checkpoint
from training.compare_runs import read_curve
from training.data.data_check import open_checked, require_samples
from training.data.loader import ImageCache
from training.evaluation.evaluate import evaluate_model
from training.prune_study.archive import BEFORE_TRAINING
from training.prune_study.runner import StudySettings, where
from training.prune_study.variants import Variant
from training.pruning.prune import summary

KEYS = ("ap50", "ap50_95", "f1")


def evaluate(weights: Path, data: Path, split: str) -> dict[str, float]:
    ckpt = load_checkpoint(weights)
    model = ckpt.model_at_trained_size()  # the study compares networks at the size they were trained at
    size = model.config.input_size
    index = open_checked(data, split)
    require_samples(index, split)
    metrics, _ = evaluate_model(model, ImageCache(index.samples, size), size, ckpt.config.class_names)
    return {k: round(float(metrics[k]), 4) for k in KEYS}


def curve(run_dir: Path) -> list[dict[str, float]]:
    """Per epoch: val AP50 and AP50-95 as the trainer logged them (EMA weights); none
    before the run's first epoch."""
    try:
        return read_curve(run_dir)
    except (FileNotFoundError, ValueError):
        return []


def flattened(points: list[dict[str, float]], tail: float = 0.25, tolerance: float = 0.01) -> bool:
    """Whether val AP50 has stopped rising: the mean of the last ``tail`` of the epochs is
    less than ``tolerance`` above the mean of as many epochs just before them.

    Means of two windows of equal length, not maxima: on 88 val images one epoch's AP50 jumps
    by 2-3 points, and the maximum of a longer stretch is the larger one by chance alone, so
    "the best of the tail within a point of the best before" (this check until session 15) can
    call a still-rising curve flat."""
    gain = gain_over_last_quarter(points, tail)
    return gain is not None and gain < tolerance


def gain_over_last_quarter(points: list[dict[str, float]], tail: float = 0.25) -> float | None:
    """How much the mean val AP50 of the last quarter of epochs lies above the quarter before
    (what :func:`flattened` judges); ``None`` for a curve too short to say."""
    if len(points) < 8:
        return None
    width = max(2, int(len(points) * tail))
    return (sum(p["val_ap50"] for p in points[-width:]) - sum(p["val_ap50"] for p in points[-2 * width:-width])) / width


def in_progress(settings: StudySettings, v: Variant) -> dict[str, Any] | None:
    """Where an unfinished run stands, from its training log only (it is not scored: a run cut
    short never enters the study's figures), or from its carried record (``prune_study.carry``)
    when the work folder is behind it or gone; ``None`` before its first epoch."""
    from training.prune_study.carry import carried_paths  # carry imports the runner, as this module does

    carried = carried_paths(settings, v)
    points = max(curve(where(settings, v).run), curve(carried.run) if carried else [], key=len)
    if not points:
        return None
    return {"name": v.name, "epochs_done": len(points), "val_ap50_last_epoch": points[-1]["val_ap50"]}


def score_variant(settings: StudySettings, v: Variant, splits: tuple[str, ...] = ("val",)) -> dict[str, Any] | None:
    """The variant's figures, or ``None`` when it has not started training."""
    p = where(settings, v)
    # The last epoch's weights, not the best: the best of ~30 epochs picked on the same val
    # set that then compares the cells would be biased upwards, more for noisier cells.
    final = p.run / "last.safetensors"
    if not final.is_file():
        return None
    points = curve(p.run)
    result: dict[str, Any] = {"name": v.name, "cell": v.cell, "method": v.method, "ratio": v.ratio,
                              "scope": v.scope, "seed": v.seed, **summary(load_checkpoint(final).model),
                              "weights": str(final), "epochs_done": len(points), "finished": p.done.is_file(),
                              "flattened": flattened(points), "gain_last_quarter": gain_over_last_quarter(points),
                              "curve": points}
    if v.method != "scratch" and (p.folder / BEFORE_TRAINING).is_file():  # archived: the pruned net is not kept
        result["before_training"] = json.loads((p.folder / BEFORE_TRAINING).read_text())
    elif p.start.is_file() and v.method != "scratch":
        result["before_training"] = {"val": evaluate(p.start, settings.data, "val")}
    result["after_training"] = {s: evaluate(final, settings.data, s) for s in splits}
    return result
