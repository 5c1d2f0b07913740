"""Network output -> detections in frame pixels: score threshold, NMS, undo the letterbox.

One implementation for every backend, so onnxruntime, TensorRT and torch give the same
boxes for the same raw output.
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


def postprocess(predictions: np.ndarray, box: Letterbox, conf: float = DEFAULT_CONF, iou: float = DEFAULT_IOU,
                max_detections: int = DEFAULT_MAX_DETECTIONS) -> Detections:
    """``predictions``: ``[N, 5 + C]`` (or ``[1, N, 5 + C]``) rows of x1, y1, x2, y2 in input
    pixels, objectness and class probabilities. Score = objectness x class probability;
    NMS is per class."""
    p = predictions[0] if predictions.ndim == 3 else predictions
    objectness = p[:, OBJECTNESS]
    candidates = np.flatnonzero(objectness > conf)  # a cheap pre-filter: score <= objectness
    if candidates.size == 0:
        return Detections()
    rows = p[candidates]
    class_scores = rows[:, FIRST_CLASS:] * rows[:, OBJECTNESS:OBJECTNESS + 1]
    classes = class_scores.argmax(1)
    scores = class_scores[np.arange(len(rows)), classes]
    keep = scores > conf
    if not keep.any():
        return Detections()
    boxes, scores, classes = rows[keep, :4], scores[keep], classes[keep]
    xywh = np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], axis=1)
    idx = cv2.dnn.NMSBoxesBatched(xywh.tolist(), scores.tolist(), classes.tolist(), conf, iou)
    idx = np.asarray(idx, dtype=np.int64).reshape(-1)
    idx = idx[np.argsort(-scores[idx], kind="stable")][:max_detections]
    return Detections(box.to_frame(boxes[idx]), scores[idx].astype(np.float32), classes[idx].astype(np.int64))
