"""The typed result every backend path returns."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class Detections:
    """Detections of one frame, in that frame's pixels.

    ``boxes`` ``[N, 4]`` float32 x1, y1, x2, y2; ``scores`` ``[N]`` float32 (objectness x
    class probability); ``classes`` ``[N]`` int64. Sorted by descending score.
    """

    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.float32))
    scores: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    classes: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))

    def __len__(self) -> int:
        return len(self.scores)

    def as_rows(self) -> np.ndarray:
        """``[N, 6]`` rows of (x1, y1, x2, y2, score, class)."""
        return np.concatenate(
            [self.boxes, self.scores[:, None], self.classes[:, None].astype(np.float32)], axis=1
        ) if len(self) else np.zeros((0, 6), np.float32)

    def above(self, threshold: float) -> Detections:
        keep = self.scores >= threshold
        return Detections(self.boxes[keep], self.scores[keep], self.classes[keep])

    def to_json(self) -> list[dict]:
        return [
            {"box": [round(float(v), 2) for v in b], "score": round(float(s), 5), "class": int(c)}
            for b, s, c in zip(self.boxes, self.scores, self.classes)
        ]


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU matrix of ``[N, 4]`` and ``[M, 4]`` x1, y1, x2, y2 boxes (``[N, M]``; empty in, empty out)."""
    a, b = np.asarray(a, np.float64).reshape(-1, 4), np.asarray(b, np.float64).reshape(-1, 4)
    tl = np.maximum(a[:, None, :2], b[None, :, :2])
    br = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(br - tl, 0, None), axis=2)
    area_a = np.prod(a[:, 2:] - a[:, :2], axis=1)
    area_b = np.prod(b[:, 2:] - b[:, :2], axis=1)
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-9)
