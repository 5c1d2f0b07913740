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
