"""Whether a saved run may go on under the settings asked for now.

A run that outlives a sitting is resumed with a config rebuilt from today's flags and
defaults. Where it runs may change between sittings (folders, threads, device); what it
trains may not: the rest of the run would follow another recipe, and its saved
``train_config.json`` would be overwritten with it.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from training.loop.trainer import TrainConfig

# Settings that may differ between the sittings that resume one run (where it runs, not what).
PLACE_FIELDS = ("out", "data", "threads", "workers", "device")
# Also paths of checkpoints whose content the caller checks itself (a pruned start, a teacher).
CHECKPOINT_PATH_FIELDS = ("init_weights", "distill_from")


def recipe_mismatch(saved: TrainConfig, asked: TrainConfig, place: tuple[str, ...] = PLACE_FIELDS) -> list[str]:
    """The recipe settings in which a run's saved config and the one asked for now differ."""
    return [f.name for f in dataclasses.fields(TrainConfig)
            if f.name not in place and getattr(saved, f.name) != getattr(asked, f.name)]


def refuse_other_recipe(run_dir: Path, asked: TrainConfig, place: tuple[str, ...] = PLACE_FIELDS) -> None:
    """Stop with one line naming the run's ``train_config.json`` when resuming it with
    ``asked`` would change its recipe; nothing to check for a run not started yet."""
    saved = run_dir / "train_config.json"
    if not saved.is_file():
        return
    differ = recipe_mismatch(TrainConfig.from_dict(json.loads(saved.read_text())), asked, place)
    if differ:
        raise SystemExit(f"{saved}: this run was started with other settings ({', '.join(differ)}); "
                         "resume it with the same flags or use another --out")
