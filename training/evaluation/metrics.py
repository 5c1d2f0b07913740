"""Detection metrics, computed the way pycocotools does (101-point interpolated AP).

Matching follows COCO: per image, detections in descending score order (stable sort)
each take the still-unmatched ground truth with the highest IoU at or above the
threshold. At most ``MAX_DETS`` detections per image count. Besides COCO's AP50, AP75
and AP50:95, this reports ``ap_jha`` -- AP averaged over IoU 0.25 to 0.75 in steps of
0.05, the definition used by Jha et al. 2021 on the Kvasir-SEG test split -- and the
operating point (precision, recall, F1, mean IoU) at the F1-best score threshold.

Also, for what a clinician feels: AP50 by polyp size (:data:`SIZE_RANGES`, box area as a
share of the frame, so the classes mean the same at any resolution) and the operating
point for a recall target (:func:`recall_operating_point`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MAX_DETS = 100
RECALL_POINTS = np.linspace(0.0, 1.0, 101)
COCO_IOUS = np.round(np.arange(0.50, 0.951, 0.05), 2)
JHA_IOUS = np.round(np.arange(0.25, 0.751, 0.05), 2)
IOU_OPERATING = 0.5
#: Polyp size classes by box area as a share of the frame's area: small is under 1% (a
#: box side under about a tenth of the frame's), large is 10% or more.
SIZE_RANGES: dict[str, tuple[float, float]] = {"small": (0.0, 0.01), "medium": (0.01, 0.10), "large": (0.10, 1.01)}


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of xyxy boxes ``[N, 4] x [M, 4] -> [N, M]``."""
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)))
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(-1)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return inter / (area_a[:, None] + area_b[None, :] - inter)


@dataclass
class ImageResult:
    """One image's detections (xyxy, scores) and ground truth, in the same pixel frame."""

    pred_boxes: np.ndarray
    scores: np.ndarray
    gt_boxes: np.ndarray
    frame_area: float = 0.0  # pixels of the whole frame; 0 when unknown (no AP by size)


@dataclass
class Matches:
    """Per-detection outcome at several IoU thresholds, for a set of images."""

    scores: np.ndarray      # [D]
    tp: np.ndarray          # [T, D] bool, one row per IoU threshold
    iou: np.ndarray         # [T, D] IoU with the matched ground truth (0 when unmatched)
    image: np.ndarray       # [D] index of the image each detection came from
    num_gt: int


def _greedy_match(ious: np.ndarray, threshold: float) -> np.ndarray:
    """COCO's greedy matching of detections (rows of ``ious``, best score first) to ground
    truth (columns): each takes the unmatched box it overlaps most (IoU ``>= threshold``;
    the last of a tie). The ground-truth index per detection, -1 where none."""
    taken = np.zeros(ious.shape[1], bool)
    matched = np.full(ious.shape[0], -1)
    for d in range(ious.shape[0]):
        best, best_iou = -1, min(threshold, 1 - 1e-10)
        for g in range(ious.shape[1]):
            if taken[g] or ious[d, g] < best_iou:
                continue
            best, best_iou = g, ious[d, g]
        if best >= 0:
            taken[best] = True
            matched[d] = best
    return matched


def match_image(result: ImageResult, thresholds: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """COCO greedy matching for one image: (scores, tp [T, D], matched IoU [T, D])."""
    order = np.argsort(-result.scores, kind="mergesort")[:MAX_DETS]
    boxes, scores = result.pred_boxes[order], result.scores[order]
    ious = iou_matrix(boxes, result.gt_boxes)
    tp = np.zeros((len(thresholds), len(boxes)), bool)
    matched_iou = np.zeros((len(thresholds), len(boxes)))
    for ti, t in enumerate(thresholds):
        matched = _greedy_match(ious, t)
        hit = matched >= 0
        tp[ti] = hit
        matched_iou[ti, hit] = ious[np.flatnonzero(hit), matched[hit]]
    return scores, tp, matched_iou


def found_ground_truth(result: ImageResult, threshold: float, iou: float = IOU_OPERATING) -> np.ndarray:
    """Which of the image's polyps the detections scoring ``> threshold`` find (IoU ``>=
    iou``), by the same greedy matching as AP and the operating points: bool per box."""
    keep = np.asarray(result.scores, np.float32) > np.float32(threshold)
    scores = result.scores[keep]
    order = np.argsort(-scores, kind="mergesort")[:MAX_DETS]
    matched = _greedy_match(iou_matrix(result.pred_boxes[keep][order], result.gt_boxes), iou)
    found = np.zeros(len(result.gt_boxes), bool)
    found[matched[matched >= 0]] = True
    return found


def match_all(results: list[ImageResult], thresholds: np.ndarray) -> Matches:
    parts = [match_image(r, thresholds) for r in results]
    scores = np.concatenate([p[0] for p in parts]) if parts else np.zeros(0)
    tp = np.concatenate([p[1] for p in parts], axis=1) if parts else np.zeros((len(thresholds), 0), bool)
    iou = np.concatenate([p[2] for p in parts], axis=1) if parts else np.zeros((len(thresholds), 0))
    image = np.concatenate([np.full(len(p[0]), i) for i, p in enumerate(parts)]) if parts else np.zeros(0, int)
    return Matches(scores, tp, iou, image, int(sum(len(r.gt_boxes) for r in results)))


def precision_recall(scores: np.ndarray, tp: np.ndarray, num_gt: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cumulative precision and recall over detections sorted by score (stable)."""
    order = np.argsort(-scores, kind="mergesort")
    hits = tp[order]
    tps = np.cumsum(hits)
    fps = np.cumsum(~hits)
    recall = tps / max(num_gt, 1)
    precision = tps / np.maximum(tps + fps, np.finfo(float).eps)
    return precision, recall, scores[order]


def average_precision(scores: np.ndarray, tp: np.ndarray, num_gt: int) -> float:
    """COCO's 101-point interpolated AP for one IoU threshold."""
    if num_gt == 0:
        return float("nan")
    precision, recall, _ = precision_recall(scores, tp, num_gt)
    envelope = np.maximum.accumulate(precision[::-1])[::-1] if len(precision) else precision
    idx = np.searchsorted(recall, RECALL_POINTS, side="left")
    sampled = np.array([envelope[i] if i < len(envelope) else 0.0 for i in idx])
    return float(sampled.mean())


@dataclass
class OperatingPoint:
    threshold: float
    precision: float
    recall: float
    f1: float
    mean_iou: float


def f1_operating_point(m: Matches, iou_index: int) -> OperatingPoint:
    """Precision, recall, F1 and mean matched IoU at the score threshold that maximises F1."""
    precision, recall, sorted_scores = precision_recall(m.scores, m.tp[iou_index], m.num_gt)
    if len(precision) == 0:
        return OperatingPoint(1.0, 0.0, 0.0, 0.0, 0.0)
    f1 = 2 * precision * recall / np.maximum(precision + recall, 1e-12)
    # Only positions where the score changes are reachable thresholds.
    last_of_tie = np.r_[sorted_scores[1:] != sorted_scores[:-1], True]
    f1_reachable = np.where(last_of_tie, f1, -1)
    k = int(np.argmax(f1_reachable))
    threshold = float(sorted_scores[k])
    kept = m.scores >= threshold
    hits = m.tp[iou_index] & kept
    mean_iou = float(m.iou[iou_index][hits].mean()) if hits.any() else 0.0
    return OperatingPoint(threshold, float(precision[k]), float(recall[k]), float(f1[k]), mean_iou)


def bootstrap_ap(m: Matches, iou_index: int, num_images: int, gt_per_image: np.ndarray,
                 reps: int = 1000, seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of AP over images (resampled with replacement)."""
    rng = np.random.default_rng(seed)
    by_image = [np.flatnonzero(m.image == i) for i in range(num_images)]
    values = []
    for _ in range(reps):
        pick = rng.integers(0, num_images, num_images)
        dets = np.concatenate([by_image[i] for i in pick]) if num_images else np.zeros(0, int)
        values.append(average_precision(m.scores[dets], m.tp[iou_index][dets], int(gt_per_image[pick].sum())))
    lo, hi = np.nanpercentile(values, [100 * (1 - level) / 2, 100 * (1 + level) / 2])
    return float(lo), float(hi)


def detection_metrics(results: list[ImageResult], bootstrap_reps: int = 1000) -> dict[str, float]:
    """All headline metrics for a list of images (see the module docstring)."""
    thresholds = np.unique(np.concatenate([COCO_IOUS, JHA_IOUS]))
    m = match_all(results, thresholds)
    ap = {float(t): average_precision(m.scores, m.tp[i], m.num_gt) for i, t in enumerate(thresholds)}
    i50 = int(np.flatnonzero(np.isclose(thresholds, IOU_OPERATING))[0])
    op = f1_operating_point(m, i50)
    out = {
        "images": len(results),
        "ground_truth_boxes": m.num_gt,
        "ap50": ap[0.5],
        "ap75": ap[0.75],
        "ap50_95": float(np.mean([ap[float(t)] for t in COCO_IOUS])),
        "ap_jha": float(np.mean([ap[float(t)] for t in JHA_IOUS])),
        "precision": op.precision,
        "recall": op.recall,
        "f1": op.f1,
        "f1_threshold": op.threshold,
        "mean_iou": op.mean_iou,
    }
    if bootstrap_reps:
        gt_counts = np.array([len(r.gt_boxes) for r in results])
        lo, hi = bootstrap_ap(m, i50, len(results), gt_counts, reps=bootstrap_reps)
        out["ap50_ci95"] = [lo, hi]
    return out


def pr_curve(results: list[ImageResult], iou: float = IOU_OPERATING) -> tuple[np.ndarray, np.ndarray]:
    """(recall, precision) arrays at one IoU threshold, for plotting."""
    m = match_all(results, np.array([iou]))
    precision, recall, _ = precision_recall(m.scores, m.tp[0], m.num_gt)
    return recall, precision


def box_area(boxes: np.ndarray) -> np.ndarray:
    return (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])


def size_class_matches(results: list[ImageResult], lo: float, hi: float,
                       iou: float = IOU_OPERATING) -> tuple[np.ndarray, np.ndarray, int]:
    """(scores, tp) of the detections that count for the size class ``[lo, hi)`` and its
    ground-truth count, as COCO's area ranges do: boxes of other sizes are ignored, and so
    are detections that match one of them or that are unmatched and of another size. As in
    COCO, a box of another size is matched once: a second detection on it (a duplicate) is
    unmatched, so it counts as a false positive when its own size is in the class."""
    scores_out, tp_out, num_gt = [], [], 0
    for r in results:
        if r.frame_area <= 0:
            raise ValueError("AP by size needs each image's frame area")
        order = np.argsort(-r.scores, kind="mergesort")[:MAX_DETS]
        boxes, scores = r.pred_boxes[order], r.scores[order]
        gt_share = box_area(r.gt_boxes) / r.frame_area if len(r.gt_boxes) else np.zeros(0)
        kept = (gt_share >= lo) & (gt_share < hi)
        num_gt += int(kept.sum())
        ious = iou_matrix(boxes, r.gt_boxes)
        taken = np.zeros(len(r.gt_boxes), bool)
        det_share = box_area(boxes) / r.frame_area if len(boxes) else np.zeros(0)
        for d in range(len(boxes)):
            candidates = np.flatnonzero(kept & ~taken & (ious[d] >= iou)) if len(r.gt_boxes) else []
            if len(candidates):
                taken[candidates[np.argmax(ious[d, candidates])]] = True
                scores_out.append(scores[d])
                tp_out.append(True)
            elif len(r.gt_boxes) and len(other := np.flatnonzero(~kept & ~taken & (ious[d] >= iou))):
                taken[other[np.argmax(ious[d, other])]] = True  # found a polyp of another size: ignored
                continue
            elif lo <= det_share[d] < hi:
                scores_out.append(scores[d])
                tp_out.append(False)
    return np.asarray(scores_out, float), np.asarray(tp_out, bool), num_gt


def ap_by_size(results: list[ImageResult], iou: float = IOU_OPERATING) -> dict[str, dict[str, float]]:
    """AP at ``iou`` per size class of :data:`SIZE_RANGES`, with each class's box count
    (AP is NaN for a class without boxes)."""
    out = {}
    for name, (lo, hi) in SIZE_RANGES.items():
        scores, tp, num_gt = size_class_matches(results, lo, hi, iou)
        out[name] = {"ap50": average_precision(scores, tp, num_gt), "boxes": num_gt}
    return out


def threshold_below(score: float) -> float:
    """The largest float32 threshold that still keeps a box scoring ``score``: the runtime
    (and OpenCV's NMS) keeps ``score > threshold``, compared in float32 (the network's
    output type), so the threshold must lie one float32 step below the score."""
    return float(np.nextafter(np.float32(score), np.float32(-np.inf)))


@dataclass
class RecallPoint:
    """The strictest score threshold at which recall reaches ``target`` (``reached`` False
    when no threshold does: then ``threshold`` keeps every detection seen). A box counts
    when its score is ``> threshold``, as at run time."""

    target: float
    reached: bool
    threshold: float
    recall: float
    precision: float


def recall_at(results: list[ImageResult] | Matches, threshold: float,
              iou: float = IOU_OPERATING) -> tuple[float, float]:
    """(recall, precision) on ``results`` keeping the detections scoring ``> threshold``
    (``results`` may be their :class:`Matches` at one IoU, to match only once)."""
    m = results if isinstance(results, Matches) else match_all(results, np.array([iou]))
    kept = m.scores.astype(np.float32) > np.float32(threshold)
    hits = int(m.tp[0][kept].sum())
    return hits / max(m.num_gt, 1), hits / max(int(kept.sum()), 1)


def recall_operating_point(results: list[ImageResult] | Matches, target: float,
                           iou: float = IOU_OPERATING) -> RecallPoint:
    """The highest threshold ``t`` such that keeping detections scoring ``> t`` (as the
    runtime does) finds at least ``target`` of the polyps (IoU ``>= iou``). Lowering the
    threshold only adds boxes, so this is where recall first reaches the target, with the
    fewest false alarms. ``t`` lies one float32 step below the score of the box that
    reaches the target (:func:`threshold_below`). ``results`` may be their
    :class:`Matches` at one IoU."""
    m = results if isinstance(results, Matches) else match_all(results, np.array([iou]))
    precision, recall, sorted_scores = precision_recall(m.scores, m.tp[0], m.num_gt)
    if len(recall) == 0:
        return RecallPoint(target, False, 1.0, 0.0, 0.0)
    last_of_tie = np.r_[sorted_scores[1:] != sorted_scores[:-1], True]
    ok = np.flatnonzero(last_of_tie & (recall >= target - 1e-12))
    k = int(ok[0]) if len(ok) else len(recall) - 1
    return RecallPoint(target, bool(len(ok)), threshold_below(sorted_scores[k]), float(recall[k]),
                       float(precision[k]))
