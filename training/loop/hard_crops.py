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
square that holds each (:func:`crop_around`): :data:`CONTEXT` times the box's longer side
and at least :data:`MIN_SIDE_FRACTION` of the frame's shorter side, centred on the box,
else moved, else shrunk (not below :data:`MIN_SIDE_FLOOR` of the shorter side), until it
clears the grown polyp; dropped when no such square holding the box does. At most ``per_frame`` crops a frame, the highest-scoring first, no two
overlapping by more than half. The pool of one pass replaces the last one's: the crops the
model still fires on come back, the ones it has learnt drop out. A crop is drawn with the
re-weighting's weight for the score that found it, so the hardest come first; crops enter
as whole training items only (mosaic tiles and zoom-out canvases stay the mined crops and
the ``--negatives`` frames, so that the hard crops are the one thing they change).

The pools live in the run folder (``hard_crops.json``, written atomically, by frame id and
window, so a dataset moved between sittings still resolves): the newest and the one before,
because a pass is written before its epoch's state, and a run stopped in between resumes
that epoch with the pool it had.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import torch

from models.checkpoint import atomic_write_bytes
from training.data.datasets import Sample
from training.data.image_files import read_image
from training.data.loader import ImageCache
from training.data.negatives import MARGIN_FRACTION, polyp_region
from training.evaluation.evaluate import ImageDetections, run_inference

HARD_SUFFIX = "#hard"
CROPS_FILE = "hard_crops.json"
#: A detection this confident, clear of the polyp, is a false alarm worth a crop (about the
#: operating thresholds the shipped models reach at val recall 0.90: 0.11-0.21).
MIN_SCORE = 0.1
#: The crop's side as a multiple of the false box's longer side: the box and its surroundings.
CONTEXT = 2.0
#: ... and at least this share of the frame's shorter side: a crop is shown at the input size,
#: so a smaller one is a magnified close-up (at half the frame, twice the runtime's scale;
#: the polyp-free crops mined beside the polyp have at least 0.3).
MIN_SIDE_FRACTION = 0.5
#: Windows are shrunk by this factor per step while no place for them is clear ...
SHRINK = 0.85
#: ... down to this share of the frame's shorter side (the mined crops' minimum: shown at
#: most 3.3 times the runtime's scale); a false box with no clear square that large is left.
MIN_SIDE_FLOOR = 0.3
#: Two crops of one frame may overlap by at most this IoU.
MAX_OVERLAP = 0.5


def _clear_counter(region: np.ndarray) -> Callable[[int, int, int, int], bool]:
    """``clear(x1, y1, x2, y2)``: whether that pixel rectangle holds no ``region`` pixel, in
    constant time (a summed-area table)."""
    table = cv2.integral(region.astype(np.uint8))
    return lambda x1, y1, x2, y2: int(table[y2, x2] - table[y1, x2] - table[y2, x1] + table[y1, x1]) == 0


def _positions(lo: int, hi: int, preferred: int) -> list[int]:
    """Up to 9 offsets spread over ``[lo, hi]`` and the preferred one, nearest to it first."""
    spread = np.linspace(lo, hi, num=min(hi - lo + 1, 9)).round().astype(int).tolist()
    return sorted({*spread, preferred}, key=lambda v: (abs(v - preferred), v))


def crop_around(box: np.ndarray, region: np.ndarray, *, context: float = CONTEXT,
                min_side_fraction: float = MIN_SIDE_FRACTION, min_side_floor: float = MIN_SIDE_FLOOR,
                clear: Callable[[int, int, int, int], bool] | None = None) -> tuple[int, int, int, int] | None:
    """A square ``(x1, y1, x2, y2)`` in image pixels that holds ``box`` (xyxy) whole and is
    clear of ``region`` (the grown polyp, boolean ``[H, W]``); ``None`` when the box itself
    touches the region or no such square clears it.

    The square's side starts at the larger of ``context`` times the box's longer side and
    ``min_side_fraction`` of the frame's shorter side. At each side the square is centred on
    the box if that is clear, else moved (within the frame, still holding the box) to the
    clear place nearest the centre (among up to 9 offsets a side); only when none is clear
    does it shrink, down to ``min_side_floor`` of the frame's shorter side (or the box's
    longer side, if larger). Moving before shrinking, and the floor, keep a false alarm beside
    the polyp near the scale the runtime sees it at, not a magnified close-up. ``clear``: the
    region's test (:func:`_clear_counter`), made once per frame by a caller with many boxes."""
    h, w = region.shape
    bx1, by1 = max(0, int(np.floor(box[0]))), max(0, int(np.floor(box[1])))
    bx2, by2 = min(w, int(np.ceil(box[2]))), min(h, int(np.ceil(box[3])))
    clear = clear or _clear_counter(region)
    if bx2 <= bx1 or by2 <= by1 or not clear(bx1, by1, bx2, by2):
        return None
    longer = max(bx2 - bx1, by2 - by1)
    smallest = max(longer, int(np.ceil(min_side_floor * min(h, w))))
    if smallest > min(h, w):
        return None
    side = min(float(min(h, w)), max(context * longer, min_side_fraction * min(h, w)))
    cx, cy = (bx1 + bx2) / 2, (by1 + by2) / 2
    while True:
        s = max(smallest, int(np.ceil(side)))
        lo_x, hi_x = max(0, bx2 - s), min(bx1, w - s)
        lo_y, hi_y = max(0, by2 - s), min(by1, h - s)
        if lo_x <= hi_x and lo_y <= hi_y:
            centre_x = int(np.clip(round(cx - s / 2), lo_x, hi_x))
            centre_y = int(np.clip(round(cy - s / 2), lo_y, hi_y))
            places = sorted(((x, y) for x in _positions(lo_x, hi_x, centre_x) for y in _positions(lo_y, hi_y, centre_y)),
                            key=lambda p: (abs(p[0] - centre_x) + abs(p[1] - centre_y), p))
            for x, y in places:
                if clear(x, y, x + s, y + s):
                    return x, y, x + s, y + s
        if s == smallest:
            return None
        side *= SHRINK


def _iou(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> float:
    iw = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def as_crop(frame: Sample, window: tuple[int, int, int, int], k: int, frame_hw: tuple[int, int]) -> Sample:
    """The ``k``-th hard crop of ``frame``: a polyp-free sample of the window (image pixels)."""
    return replace(frame, id=f"{frame.id}{HARD_SUFFIX}{k}", boxes=np.zeros((0, 4), np.float32),
                   labels=np.zeros(0, np.int64), mask_path=None, size=frame_hw, boxes_from_mask=False,
                   crop=tuple(int(v) for v in window))


def crops_of_frame(sample: Sample, dets: ImageDetections, frame_hw: tuple[int, int], *, per_frame: int,
                   min_score: float = MIN_SCORE,
                   margin_fraction: float = MARGIN_FRACTION) -> list[tuple[Sample, float]]:
    """The hard crops of one polyp frame from the model's detections on it (original pixels):
    polyp-free samples (``crop`` set, id ``<frame>#hard<k>``) with the score that found each."""
    order = [int(i) for i in np.argsort(-dets.scores, kind="stable") if dets.scores[i] >= min_score]
    if not order or per_frame < 1:
        return []
    region = polyp_region(sample, frame_hw, margin_fraction)  # reads the mask: only frames that need it
    clear = _clear_counter(region)
    chosen: list[tuple[Sample, float]] = []
    windows: list[tuple[int, int, int, int]] = []
    for i in order:
        window = crop_around(dets.boxes[i], region, clear=clear)
        if window is None or any(_iou(window, other) > MAX_OVERLAP for other in windows):
            continue
        windows.append(window)
        chosen.append((as_crop(sample, window, len(chosen), frame_hw), float(dets.scores[i])))
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


def frame_of(crop: Sample) -> str:
    """The id of the polyp frame a hard crop was cut from."""
    return crop.id.rsplit(HARD_SUFFIX, 1)[0]


def save_crops(out: Path, epoch: int, crops: list[tuple[Sample, float]]) -> None:
    """Write the pool mined after ``epoch`` epochs (frame id, window, score of each crop),
    keeping the pool before it."""
    rows = [{"frame": frame_of(s), "id": s.id, "size": list(s.size or ()), "crop": list(s.crop or ()),
             "score": score} for s, score in crops]
    # The newest pool mined before this pass (a pass repeated after a stop rewrites its own).
    pools = [{"epoch": epoch, "crops": rows}] + [p for p in _read_pools(out) if int(p["epoch"]) < epoch][:1]
    atomic_write_bytes(out / CROPS_FILE, json.dumps({"pools": pools}, indent=1).encode())


def _read_pools(out: Path) -> list[dict]:
    try:
        data = json.loads((out / CROPS_FILE).read_text())
        pools = data["pools"] if "pools" in data else [data]  # the first form held one pool
        return [{"epoch": int(p["epoch"]), "crops": list(p["crops"])} for p in pools]
    except FileNotFoundError:
        return []
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise RuntimeError(f"{out / CROPS_FILE}: cannot read the hard-negative crops ({exc})") from None


def load_crops(out: Path, epochs_done: int, frames: dict[str, Sample]) -> list[tuple[Sample, float]] | None:
    """The pool in use after ``epochs_done`` epochs (the newest mined no later), its crops
    cut from ``frames`` (the training split's polyp frames by id); ``None`` before the first
    pass. A crop whose frame is not in ``frames`` stops the run, naming the file."""
    for pool in _read_pools(out):
        if int(pool["epoch"]) > epochs_done:
            continue
        try:
            return [(as_crop(frames[r.get("frame") or r["id"].rsplit(HARD_SUFFIX, 1)[0]], tuple(r["crop"]),
                             int(r["id"].rsplit(HARD_SUFFIX, 1)[1]),
                             tuple(r["size"])), float(r["score"])) for r in pool["crops"]]
        except KeyError as exc:
            raise RuntimeError(f"{out / CROPS_FILE}: crop of frame {exc} that the training split does not "
                               "have (another dataset?)") from None
    return None
