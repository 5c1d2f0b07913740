"""Hard-negative crops: background of the polyp frames where the model fires, cut out and
trained on as polyp-free items.

Hard-negative re-weighting (:mod:`training.loop.hard_negatives`) can only draw more often
what is already in the polyp-free pool: one crop per frame, the largest rectangle clear of
the polyp. The mucosa elsewhere in the frame (a glare spot beside the polyp, a fold above
it, debris in a corner) is never cut out, so a false alarm there is never trained away.
This is the classic form of hard-negative mining in detection (Felzenszwalb et al. 2010;
the bootstrapping of Sung & Poggio 1998): after a pass, run the model over the whole
training frames, and every confident detection that lies clear of the polyp becomes a
training negative of its own.

Each mining pass (the same epochs as the re-weighting) runs the EMA model over the polyp
frames at the training size, keeps detections scoring at least ``min_score`` that do not
touch the polyp grown by :data:`~training.data.negatives.MARGIN_FRACTION` of the frame's
shorter side (a mislocalised box on the polyp is not a false alarm on mucosa), and cuts a
square around each: :data:`CONTEXT` times the box's longer side, and at least
:data:`~training.data.negatives.MIN_SIDE_FRACTION` of the frame's shorter side (the mined
crops' minimum), shrunk until it clears the grown polyp, or dropped when even a tight window
would not. At most ``per_frame`` crops a frame, the highest-scoring first, no two
overlapping by more than half. The pool of one pass replaces the last one's: the crops the
model still fires on come back, the ones it has learnt drop out. A crop is drawn with the
re-weighting's weight for the score that found it, so the hardest come first.

The crops live in the run folder (``hard_crops.json``, written atomically): ``--resume``
trains on the same pool.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from models.checkpoint import atomic_write_bytes
from training.data.datasets import Sample
from training.data.image_files import read_image
from training.data.loader import ImageCache
from training.data.negatives import MARGIN_FRACTION, MIN_SIDE_FRACTION, polyp_region
from training.evaluation.evaluate import ImageDetections, run_inference

HARD_SUFFIX = "#hard"
CROPS_FILE = "hard_crops.json"
#: A detection this confident, clear of the polyp, is a false alarm worth a crop (about the
#: operating thresholds the shipped models reach at val recall 0.90: 0.11-0.21).
MIN_SCORE = 0.1
#: The crop's side as a multiple of the false box's longer side: the box and its surroundings.
CONTEXT = 2.0
#: Windows are shrunk by this factor per step while they touch the polyp.
SHRINK = 0.85
#: Two crops of one frame may overlap by at most this IoU.
MAX_OVERLAP = 0.5


def _touches(region: np.ndarray, box: tuple[float, float, float, float]) -> bool:
    h, w = region.shape
    x1, y1 = max(0, int(np.floor(box[0]))), max(0, int(np.floor(box[1])))
    x2, y2 = min(w, int(np.ceil(box[2]))), min(h, int(np.ceil(box[3])))
    return x2 > x1 and y2 > y1 and bool(region[y1:y2, x1:x2].any())


def crop_around(box: np.ndarray, region: np.ndarray, *, context: float = CONTEXT,
                min_side_fraction: float = MIN_SIDE_FRACTION) -> tuple[int, int, int, int] | None:
    """A square ``(x1, y1, x2, y2)`` in image pixels around ``box`` (xyxy) that holds it whole
    and is clear of ``region`` (the grown polyp, boolean ``[H, W]``); ``None`` when the box
    itself touches the region or no window that holds it clears the region.

    The window is centred on the box and moved inside the frame; it starts at the larger of
    ``context`` times the box's longer side and ``min_side_fraction`` of the frame's shorter
    side, and shrinks until it is clear, never below the box's own longer side."""
    h, w = region.shape
    x1, y1, x2, y2 = (float(v) for v in box)
    x1, y1, x2, y2 = max(0.0, x1), max(0.0, y1), min(float(w), x2), min(float(h), y2)
    if x2 <= x1 or y2 <= y1 or _touches(region, (x1, y1, x2, y2)):
        return None
    longer = max(x2 - x1, y2 - y1)
    side = min(float(min(h, w)), max(context * longer, min_side_fraction * min(h, w)))
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    while side >= longer:
        s = int(np.ceil(side))
        left = int(np.clip(round(cx - s / 2), 0, w - s))
        top = int(np.clip(round(cy - s / 2), 0, h - s))
        # Moved inside the frame, the window must still hold the box.
        if left <= x1 and top <= y1 and left + s >= x2 and top + s >= y2:
            window = (left, top, left + s, top + s)
            if not _touches(region, window):
                return window
        side *= SHRINK
    return None


def _iou(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> float:
    iw = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def crops_of_frame(sample: Sample, dets: ImageDetections, frame_hw: tuple[int, int], *, per_frame: int,
                   min_score: float = MIN_SCORE,
                   margin_fraction: float = MARGIN_FRACTION) -> list[tuple[Sample, float]]:
    """The hard crops of one polyp frame from the model's detections on it (original pixels):
    polyp-free samples (``crop`` set, id ``<frame>#hard<k>``) with the score that found each."""
    order = [int(i) for i in np.argsort(-dets.scores, kind="stable") if dets.scores[i] >= min_score]
    if not order or per_frame < 1:
        return []
    region = polyp_region(sample, frame_hw, margin_fraction)  # reads the mask: only frames that need it
    chosen: list[tuple[Sample, float]] = []
    windows: list[tuple[int, int, int, int]] = []
    for i in order:
        window = crop_around(dets.boxes[i], region)
        if window is None or any(_iou(window, other) > MAX_OVERLAP for other in windows):
            continue
        windows.append(window)
        chosen.append((replace(sample, id=f"{sample.id}{HARD_SUFFIX}{len(chosen)}",
                               boxes=np.zeros((0, 4), np.float32), labels=np.zeros(0, np.int64), mask_path=None,
                               size=frame_hw, boxes_from_mask=False, crop=window), float(dets.scores[i])))
        if len(chosen) == per_frame:
            break
    return chosen


def mine_hard_crops(model: torch.nn.Module, positives: ImageCache, size: int, *, per_frame: int,
                    min_score: float = MIN_SCORE) -> list[tuple[Sample, float]]:
    """Run ``model`` over every polyp frame of ``positives`` (whole, at ``size``, as the
    runtime sees it) and cut the hard crops of each (:func:`crops_of_frame`)."""
    dets = run_inference(model, positives, size, conf=min_score)
    out: list[tuple[Sample, float]] = []
    for idx, d in dets.items():
        sample = positives.samples[idx]
        if len(d.scores) == 0:
            continue
        frame_hw = sample.frame_hw or read_image(sample.image_path).shape[:2]
        out += crops_of_frame(sample, d, frame_hw, per_frame=per_frame, min_score=min_score)
    return out


def save_crops(out: Path, epoch: int, crops: list[tuple[Sample, float]]) -> None:
    """Write the pool mined after ``epoch`` epochs: frame, window and score of each crop."""
    rows = [{"id": s.id, "image": str(s.image_path), "size": list(s.size or ()), "crop": list(s.crop or ()),
             "score": score} for s, score in crops]
    atomic_write_bytes(out / CROPS_FILE, json.dumps({"epoch": epoch, "crops": rows}, indent=1).encode())


def load_crops(out: Path, epochs_done: int) -> list[tuple[Sample, float]] | None:
    """The pool in use after ``epochs_done`` epochs; ``None`` when there is none or it was
    mined after that epoch (a stop between mining and the state write: the run then trains
    without hard crops until the next pass, as it did before that pass)."""
    try:
        data = json.loads((out / CROPS_FILE).read_text())
        if int(data["epoch"]) > epochs_done:
            return None
        return [(Sample(r["id"], Path(r["image"]), np.zeros((0, 4), np.float32), np.zeros(0, np.int64),
                        size=tuple(r["size"]) or None, crop=tuple(r["crop"])), float(r["score"]))
                for r in data["crops"]]
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise RuntimeError(f"{out / CROPS_FILE}: cannot read the hard-negative crops ({exc})") from None
