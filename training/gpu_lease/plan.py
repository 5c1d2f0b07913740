"""The runs of one lease for issue 11: a longer baseline, and the table of what each change
of the new recipe bought (``docs/accuracy.md``), trained side by side on one GPU.

The recipe is ``make train-baseline``'s (YOLOv3-SPP x0.25, 320 px, polyp-free crops mined
from the training frames, hard negatives, augmentation for other scopes). Each ablation
takes away one change, all at the same number of epochs and seed, so their differences are
the changes' and nothing else's. Epochs are not fixed here: the runner times an epoch of
every run side by side and fits them to the time the lease has left (``fit_epochs``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from training.data.augment import AugmentConfig
from training.trainer import TrainConfig

#: Provisional epochs while the runner times the first epochs: only warm-up happens before
#: the runs are re-planned, and warm-up does not depend on the total (3 epochs, less than half).
PROVISIONAL_EPOCHS = 400


@dataclass(frozen=True)
class Run:
    """One training run of the lease."""

    name: str
    what: str                 # the change it measures, in words (the docs table's row)
    overrides: dict           # TrainConfig fields that differ from the recipe
    group: str                # runs of one group get the same epochs ("ablation"), or their own
    keep_weights: bool = False  # bring its best checkpoint back (fp16)


def recipe(data: str, device: str = "cuda", workers: int = 2) -> TrainConfig:
    """``make train-baseline``'s first stage as a configuration (epochs set later)."""
    return TrainConfig(data=data, model="yolov3-spp", width=0.25, img=320, batch=16, epochs=PROVISIONAL_EPOCHS,
                       augment=AugmentConfig.other_scopes(), device=device, workers=workers, threads=1)


def issue11_runs() -> list[Run]:
    other = AugmentConfig.other_scopes()
    return [
        Run("baseline", "the new recipe, one long cosine cycle", {}, "baseline", keep_weights=True),
        Run("abl-recipe", "the new recipe (the reference row)", {}, "ablation"),
        Run("abl-256px", "input 256 px instead of 320", {"img": 256}, "ablation"),
        Run("abl-no-negatives", "no polyp-free samples (no mined crops, no hard negatives)",
            {"mine_negatives": False, "negative_fraction": 0.0}, "ablation"),
        Run("abl-no-hard-negatives", "mined crops drawn uniformly (no hard-negative re-weighting)",
            {"hard_negatives_from": 1.0}, "ablation"),
        Run("abl-no-zoom-out", "no zoom-out augmentation (small polyps on mucosa)",
            {"augment": dataclasses.replace(other, zoom_out=0.0)}, "ablation"),
        Run("abl-kvasir-augment", "the augmentation before issue 11 (no zoom-out, colour, blur, glare, border)",
            {"augment": AugmentConfig()}, "ablation"),
    ]


def config_for(run: Run, base: TrainConfig, out: str) -> TrainConfig:
    return dataclasses.replace(base, out=out, **run.overrides)


def fit_epochs(epoch_seconds: dict[str, float], groups: dict[str, str], seconds_left: float,
               done: dict[str, int] | None = None, minimum: int = 5) -> dict[str, int]:
    """Epochs for each run so that all end within ``seconds_left`` (they run at once, each
    at the epoch time measured side by side). Runs of the group "ablation" share the
    smallest fit, so their rows differ only in the change they measure; other runs get
    their own. ``done`` epochs are already behind each run. Never fewer than ``minimum``."""
    done = done or {}
    fit = {name: done.get(name, 0) + int(seconds_left // max(secs, 1e-6)) for name, secs in epoch_seconds.items()}
    shared: dict[str, int] = {}
    for name, group in groups.items():
        if group == "ablation" and name in fit:
            shared[group] = min(shared.get(group, fit[name]), fit[name])
    return {name: max(minimum, shared.get(groups.get(name, ""), fit[name]) if groups.get(name) == "ablation"
                      else fit[name]) for name in fit}
