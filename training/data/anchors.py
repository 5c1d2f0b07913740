"""Anchor boxes by k-means with the 1 - IoU distance (YOLOv2/v3), at the training size."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: A box counts as recallable by an anchor when their width/height IoU exceeds this.
RECALL_IOU = 0.25


def wh_iou(boxes: np.ndarray, anchors: np.ndarray) -> np.ndarray:
    """IoU of (w, h) pairs as if they shared a centre: ``[N, 2] x [K, 2] -> [N, K]``."""
    inter = np.minimum(boxes[:, None, 0], anchors[None, :, 0]) * np.minimum(boxes[:, None, 1], anchors[None, :, 1])
    union = boxes[:, None, 0] * boxes[:, None, 1] + anchors[None, :, 0] * anchors[None, :, 1] - inter
    return inter / union


@dataclass
class AnchorFit:
    anchors: np.ndarray          # [K, 2], sorted by area
    mean_best_iou: float         # mean over boxes of the IoU with their best anchor
    best_possible_recall: float  # fraction of boxes whose best anchor IoU > RECALL_IOU
    iterations: int


def kmeans_anchors(wh: np.ndarray, k: int = 9, seed: int = 0, max_iter: int = 300) -> AnchorFit:
    """Cluster box sizes ``[N, 2]`` (pixels at the training input size) into ``k`` anchors.

    Each box joins the anchor it overlaps most; each anchor moves to the median of its
    boxes (medians resist the odd giant or sliver box). Restarts from k-means++ seeds.
    """
    wh = np.asarray(wh, dtype=np.float64)
    wh = wh[(wh > 0).all(axis=1)]
    if len(wh) < k:
        raise ValueError(f"need at least {k} boxes to fit {k} anchors, got {len(wh)}")
    rng = np.random.default_rng(seed)
    best: AnchorFit | None = None
    for _ in range(5):
        centres = _seed_centres(wh, k, rng)
        assign = None
        for it in range(1, max_iter + 1):  # noqa: B007 - the count is reported
            new_assign = wh_iou(wh, centres).argmax(axis=1)
            if assign is not None and np.array_equal(new_assign, assign):
                break
            assign = new_assign
            for j in range(k):
                members = wh[assign == j]
                centres[j] = np.median(members, axis=0) if len(members) else wh[rng.integers(len(wh))]
        fit = _score(wh, centres, it)
        if best is None or fit.mean_best_iou > best.mean_best_iou:
            best = fit
    return best  # type: ignore[return-value]


def _seed_centres(wh: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    centres = [wh[rng.integers(len(wh))]]
    for _ in range(1, k):
        dist = 1 - wh_iou(wh, np.array(centres)).max(axis=1)
        p = dist ** 2
        p = p / p.sum() if p.sum() > 0 else np.full(len(wh), 1 / len(wh))
        centres.append(wh[rng.choice(len(wh), p=p)])
    return np.array(centres, dtype=np.float64)


def _score(wh: np.ndarray, centres: np.ndarray, iterations: int) -> AnchorFit:
    order = np.argsort(centres.prod(axis=1))
    centres = centres[order]
    best_iou = wh_iou(wh, centres).max(axis=1)
    return AnchorFit(centres, float(best_iou.mean()), float((best_iou > RECALL_IOU).mean()), iterations)


#: The loss assigns a box to every anchor within this factor of its width and height.
MATCH_RATIO = 4.0


def matched_share(wh: np.ndarray, anchors: np.ndarray, scale: float = 1.0, ratio: float = MATCH_RATIO,
                  min_side: float = 2.0) -> float:
    """Share of boxes ``[N, 2]``, shrunk by ``scale`` (boxes then under ``min_side`` dropped,
    as augmentation drops them), that have an anchor within ``ratio`` of both sides: the
    boxes the loss can learn at all. Small polyps made by zoom-out or multi-scale are the ones
    at risk of having none."""
    w = np.asarray(wh, np.float64) * scale
    w = w[(w >= min_side).all(axis=1)]
    if not len(w):
        return float("nan")
    r = w[:, None, :] / np.asarray(anchors, np.float64)[None]
    return float((np.maximum(r, 1 / r).max(axis=2).min(axis=1) < ratio).mean())


def box_sizes_at(samples: list, size: int) -> np.ndarray:
    """(w, h) of every box after letterboxing its image to ``size``."""
    out = []
    for s in samples:
        h, w = s.size if s.size is not None else (None, None)
        if h is None:
            raise ValueError(f"{s.image_path}: image size unknown; cannot scale boxes for anchors")
        scale = size / max(h, w)
        b = s.boxes
        out.append(np.stack([(b[:, 2] - b[:, 0]) * scale, (b[:, 3] - b[:, 1]) * scale], axis=1))
    return np.concatenate(out) if out else np.zeros((0, 2))
