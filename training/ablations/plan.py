"""The runs that measure what each change of the new recipe bought (issue 11,
``docs/accuracy.md``), and the longer baseline a GPU lease trains beside them.

The recipe is ``make train-baseline``'s (YOLOv3-SPP x0.25, 320 px, polyp-free crops mined
from the training frames, hard negatives, augmentation for other scopes). Each ablation
takes away one change (or, for a change not in the recipe yet, adds it), all at the same
number of epochs and seed, so their differences are the changes' and nothing else's. Epochs are not fixed here: a GPU lease fits them to its
time (``training.gpu_lease.plan.fit_epochs``), the CPU campaign takes them from the command
line (``python -m training.ablations``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from training.data.augment.pipeline import AugmentConfig
from training.loop.trainer import TrainConfig

ABLATION = "ablation"
REFERENCE = "abl-recipe"  # the ablations' reference row: the recipe itself at their epochs

# Changes adopted into ``make train-baseline`` after the campaign started, each by a rule in
# docs/accuracy.md written before its deciding run: painted air bubbles and residue (session 20,
# seed 1) and copy-paste of training polyps (session 21, seed 1). The lease's long baseline has
# them; the ablations keep the reference they began with.
ADOPTED_AUGMENT = {"distractors": 0.5, "copy_paste": 0.5}


@dataclass(frozen=True)
class Run:
    """One training run, of a GPU lease or of the CPU campaign."""

    name: str
    what: str                 # the change it measures, in words (the docs table's row)
    overrides: dict           # TrainConfig fields that differ from the recipe
    group: str                # runs of one group get the same epochs (ABLATION), or their own
    keep_weights: bool = False  # a lease brings its best checkpoint back (fp16)


def recipe(data: str, epochs: int, device: str = "cuda", workers: int = 2, threads: int = 1) -> TrainConfig:
    """The campaign's reference recipe: ``make train-baseline``'s first stage as it was when the
    campaign started, without the bubbles, residue and copy-paste adopted later (``ADOPTED_AUGMENT``).
    It stays so: the campaign refuses a run whose recorded configuration changed."""
    return TrainConfig(data=data, model="yolov3-spp", width=0.25, img=320, batch=16, epochs=epochs,
                       augment=AugmentConfig.other_scopes(), device=device, workers=workers, threads=threads)


def issue11_runs() -> list[Run]:
    """The lease's baseline and the ablations. The changes that could improve the recipe
    (added ones) run right after the reference, before those that take a part away: on the
    CPU the campaign takes sittings, and what could be adopted should be known first."""
    other = AugmentConfig.other_scopes()
    adopted = {"augment": dataclasses.replace(other, **ADOPTED_AUGMENT)}
    return [
        Run("baseline", "the new recipe with the changes adopted since (bubbles and residue, copy-paste), one "
            "long cosine cycle", adopted, "baseline", keep_weights=True),
        Run("abl-recipe", "the new recipe (the reference row)", {}, ABLATION),
        Run("abl-multi-scale", "multi-scale training added (each batch at 0.5x-1.5x of the input, YOLOv5's range)",
            {"multi_scale": 0.5}, ABLATION),
        Run("abl-more-negatives", "three times the polyp-free draws per epoch (0.75 x the polyp images, not 0.25)",
            {"negative_fraction": 0.75}, ABLATION),
        Run("abl-copy-paste", "copy-paste added (p 0.5: 1-2 training polyps cut along their masks, shrunk to "
            "0.15-0.6, pasted into frames, polyp-free ones included)",
            {"augment": dataclasses.replace(other, copy_paste=0.5)}, ABLATION),
        Run("abl-distractors", "air bubbles and residue painted clear of the polyps (p 0.5: 1-4 bubbles or "
            "1-3 residue blobs per frame), the kinds of false alarm every model shares",
            {"augment": dataclasses.replace(other, distractors=0.5)}, ABLATION),
        Run("abl-hard-crops", "hard-negative crops added (at each hard-negative pass, a square cut around the "
            "strongest detection clear of the polyp in each polyp frame, trained on as polyp-free)",
            {"hard_crops": 1}, ABLATION),
        Run("abl-256px", "input 256 px instead of 320", {"img": 256}, ABLATION),
        Run("abl-no-negatives", "no polyp-free samples (no mined crops, no hard negatives)",
            {"mine_negatives": False, "negative_fraction": 0.0}, ABLATION),
        Run("abl-no-hard-negatives", "mined crops drawn uniformly (no hard-negative re-weighting)",
            {"hard_negatives_from": 1.0}, ABLATION),
        Run("abl-no-zoom-out", "no zoom-out augmentation (small polyps on mucosa)",
            {"augment": dataclasses.replace(other, zoom_out=0.0)}, ABLATION),
        Run("abl-kvasir-augment", "the augmentation before issue 11 (no zoom-out, colour, blur, glare, border)",
            {"augment": AugmentConfig()}, ABLATION),
    ]


def config_for(run: Run, base: TrainConfig, out: str) -> TrainConfig:
    return dataclasses.replace(base, out=out, **run.overrides)


def ablations() -> list[Run]:
    """The runs of the per-change table, the reference row first."""
    return [r for r in issue11_runs() if r.group == ABLATION]
