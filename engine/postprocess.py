"""Network output -> detections in frame pixels: score threshold, NMS, box merging, undo
the letterbox.

One implementation for every backend, so onnxruntime, TensorRT and torch give the same
boxes for the same raw output. Validation (``training.evaluation.evaluate``) suppresses
and merges the same way; ``tests/test_eval_nms.py`` and ``tests/test_box_merge.py`` keep the two
in step (training may not
import this package, and this one may not import torch): ``tests/test_box_merge.py``.
"""

from __future__ import annotations

import cv2
import numpy as np

from engine.detections import Detections
from engine.preprocess import Letterbox

OBJECTNESS = 4
FIRST_CLASS = 5
DEFAULT_CONF = 0.25
DEFAULT_IOU = 0.45
DEFAULT_MAX_DETECTIONS = 100
#: Box merging's default share of the kept box's score a candidate needs to be merged in.
DEFAULT_MERGE_SCORE_RATIO = 0.5


def check_conf(conf: float) -> float:
    """``conf`` as a float, or ValueError naming it: a score threshold of 1 or more keeps no
    box and one of 0 or less keeps every candidate, so neither is ever what was meant."""
    value = float(conf)
    if not 0.0 < value < 1.0:  # also refuses NaN
        raise ValueError(f"conf must be in (0, 1), got {conf}")
    return value


def check_iou(iou: float) -> float:
    """``iou`` as a float, or ValueError naming it: NMS compares overlaps, which lie in
    [0, 1], and OpenCV fails deep inside with a traceback on a negative threshold. 1 keeps
    every box but exact duplicates; 0 is refused (any touching boxes would merge)."""
    value = float(iou)
    if not 0.0 < value <= 1.0:
        raise ValueError(f"iou must be in (0, 1], got {iou}")
    return value


def check_merge(merge_iou: float | None, score_ratio: float) -> tuple[float | None, float]:
    """``(merge_iou, score_ratio)`` checked, or ValueError naming the bad one. ``merge_iou``
    None (or 0) turns merging off; otherwise both lie in (0, 1]."""
    if merge_iou is not None and float(merge_iou) == 0.0:
        merge_iou = None
    if merge_iou is not None and not 0.0 < float(merge_iou) <= 1.0:
        raise ValueError(f"box merge IoU must be in (0, 1] (0: off), got {merge_iou}")
    if not 0.0 < float(score_ratio) <= 1.0:
        raise ValueError(f"box merge score ratio must be in (0, 1], got {score_ratio}")
    return (None if merge_iou is None else float(merge_iou)), float(score_ratio)


def pairwise_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every xyxy box in ``a`` [N, 4] with every one in ``b`` [M, 4] -> [N, M]."""
    top_left = np.maximum(a[:, None, :2], b[None, :, :2])
    bottom_right = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(bottom_right - top_left, 0, None).prod(2)
    area_a = (a[:, 2:] - a[:, :2]).clip(0, None).prod(1)
    area_b = (b[:, 2:] - b[:, :2]).clip(0, None).prod(1)
    return inter / (area_a[:, None] + area_b[None] - inter + 1e-7)  # training.box_ops.box_iou's form


def merge_boxes(kept: np.ndarray, boxes: np.ndarray, scores: np.ndarray, classes: np.ndarray,
                merge_iou: float, score_ratio: float) -> np.ndarray:
    """Each kept box (indices ``kept`` into the candidates) replaced by the score-weighted
    mean of the candidates of its class that overlap it by more than ``merge_iou`` and score
    at least ``score_ratio`` times it (itself included, so a lone box stays where it is).

    Greedy NMS keeps one box per cluster and throws the rest away; neighbouring cells and
    anchors see the same polyp, and their mean fits it more tightly (YOLOv5's merge NMS).
    The score floor relative to the kept box makes the result independent of the score
    threshold: a box kept above t only ever merges candidates above ``score_ratio`` x t."""
    wide = boxes.astype(np.float64)  # as validation computes it (float64), so both decide alike
    near = pairwise_iou(wide[kept], wide) > merge_iou
    near &= classes[kept][:, None] == classes[None, :]
    near &= scores[None, :] >= score_ratio * scores[kept][:, None]
    near[np.arange(len(kept)), kept] = True  # itself, even a degenerate (zero-area) box
    weights = near * scores[None, :].astype(np.float64)
    return ((weights @ wide) / weights.sum(1, keepdims=True)).astype(boxes.dtype)


def postprocess(predictions: np.ndarray, box: Letterbox, conf: float = DEFAULT_CONF, iou: float = DEFAULT_IOU,
                max_detections: int = DEFAULT_MAX_DETECTIONS, merge_iou: float | None = None,
                merge_score_ratio: float = DEFAULT_MERGE_SCORE_RATIO) -> Detections:
    """``predictions``: ``[N, 5 + C]`` (or ``[1, N, 5 + C]``) rows of x1, y1, x2, y2 in input
    pixels, objectness and class probabilities. Score = objectness x class probability;
    NMS is per class. With ``merge_iou``, each kept box is then merged with its neighbours
    (:func:`merge_boxes`); candidates down to ``merge_score_ratio`` x ``conf`` take part, so
    the boxes above ``conf`` are those validation keeps above it."""
    floor = conf * merge_score_ratio if merge_iou else conf
    p = predictions[0] if predictions.ndim == 3 else predictions
    objectness = p[:, OBJECTNESS]
    candidates = np.flatnonzero(objectness > floor)  # a cheap pre-filter: score <= objectness
    if candidates.size == 0:
        return Detections()
    rows = p[candidates]
    class_scores = rows[:, FIRST_CLASS:] * rows[:, OBJECTNESS:OBJECTNESS + 1]
    classes = class_scores.argmax(1)
    scores = class_scores[np.arange(len(rows)), classes]
    keep = scores > floor
    if not (scores > conf).any():
        return Detections()
    boxes, scores, classes = rows[keep, :4], scores[keep], classes[keep]
    xywh = np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], axis=1)
    # Candidates under ``conf`` (there only to be merged) come after every box above it in
    # greedy NMS, so they can suppress none of them: the boxes kept above ``conf`` are the same.
    idx = cv2.dnn.NMSBoxesBatched(xywh.tolist(), scores.tolist(), classes.tolist(), floor, iou)
    idx = np.asarray(idx, dtype=np.int64).reshape(-1)
    idx = idx[scores[idx] > conf]
    idx = idx[np.argsort(-scores[idx], kind="stable")][:max_detections]
    kept_boxes = boxes[idx] if not merge_iou or not idx.size else merge_boxes(
        idx, boxes, scores, classes, merge_iou, merge_score_ratio)
    return Detections(box.to_frame(kept_boxes), scores[idx].astype(np.float32), classes[idx].astype(np.int64))
