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
