"""Hard-negative mining: polyp-free samples the model fires on are drawn more often.

After a first pass (``hard_negatives_from`` of the epochs), and every
``hard_negatives_every`` epochs after, the trainer runs the EMA model over every
polyp-free training item, un-augmented, and gives each a sampling weight
``1 + HARD_GAIN x (its highest detection score)``: a crop the model calls a polyp with
0.9 is drawn 4.6 times as often as one it leaves empty. Weights never reach zero, so easy
negatives keep being seen (and stay easy). The weights live in the run folder
(``negative_weights.json``, written atomically, the newest set and the one before), so
``--resume`` keeps them.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from models.checkpoint import atomic_write_bytes
from training.data.loader import ImageCache
from training.evaluation.evaluate import run_inference

HARD_GAIN = 4.0
WEIGHTS_FILE = "negative_weights.json"


def highest_scores(model: torch.nn.Module, negatives: ImageCache, size: int) -> np.ndarray:
    """Each polyp-free item's highest detection score (0 when the model finds nothing)."""
    dets = run_inference(model, negatives, size)
    return np.array([float(dets[i].scores.max()) if len(dets[i].scores) else 0.0 for i in range(len(negatives))])


def hardness_weights(scores: np.ndarray, gain: float = HARD_GAIN) -> np.ndarray:
    """Sampling weights ``1 + gain x score``: at least 1, so no negative is ever dropped."""
    return 1.0 + gain * np.clip(np.asarray(scores, np.float64), 0.0, 1.0)


def save_weights(out: Path, epoch: int, ids: list[str], weights: np.ndarray) -> None:
    """Write the weights mined after ``epoch`` epochs (full precision), keeping the set before
    them: a pass is written before its epoch's state, and a run stopped in between resumes
    that epoch with the weights it had, drawing what an uninterrupted run would."""
    entry = {"epoch": epoch, "gain": HARD_GAIN, "weights": dict(zip(ids, weights.tolist()))}
    # The newest set mined before this pass (a pass repeated after a stop rewrites its own).
    previous = [e for e in _read(out) if isinstance(e, dict) and _epoch(e) < epoch][:1]
    atomic_write_bytes(out / WEIGHTS_FILE, json.dumps({"sets": [entry, *previous]}, indent=1).encode())


def _epoch(entry: dict) -> int:
    try:
        return int(entry["epoch"])
    except (KeyError, TypeError, ValueError):
        return 1 << 62  # unreadable: never chosen, never kept


def _read(out: Path) -> list[dict]:
    """The saved sets, newest first (a file from before the sets held one, at the top level)."""
    try:
        data = json.loads((out / WEIGHTS_FILE).read_text())
        return list(data["sets"]) if "sets" in data else [data]
    except (OSError, ValueError, KeyError, TypeError):
        return []


def load_weights(out: Path, ids: list[str], epochs_done: int) -> np.ndarray | None:
    """The weights in use after ``epochs_done`` epochs (the newest set mined no later), in
    the order of ``ids``; ``None`` when there are none or they were made for other
    negatives: then the negatives are drawn uniformly until the next mining pass."""
    for entry in _read(out):
        try:
            saved = entry["weights"]
            if int(entry["epoch"]) > epochs_done:
                continue
            if set(saved) != set(ids):
                return None
            return np.array([float(saved[i]) for i in ids])
        except (ValueError, KeyError, TypeError):
            return None
    return None
