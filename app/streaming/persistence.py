"""Against flicker: show a box once it was seen in ``k`` of the last ``n`` frames, and keep
showing it for ``hold`` frames after it was last seen.

Brief false positives dominate the alarms of clinical CADe systems, and a box that blinks
is worse than none. Detections are linked from frame to frame by IoU; a held box stays
where the polyp was last seen.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import numpy as np

from engine.detections import Detections, box_iou

DEFAULT_K, DEFAULT_N, DEFAULT_HOLD = 2, 3, 4
MATCH_IOU = 0.3


@dataclass
class _Track:
    box: np.ndarray
    score: float
    cls: int
    hits: deque = field(default_factory=deque)
    since_seen: int = 0
    confirmed: bool = False


@dataclass(frozen=True)
class PersistenceSettings:
    k: int = DEFAULT_K
    n: int = DEFAULT_N
    hold: int = DEFAULT_HOLD

    def __post_init__(self) -> None:
        if not 1 <= self.k <= self.n:
            raise ValueError(f"need 1 <= k <= n, got k={self.k}, n={self.n}")
        if self.hold < 0:
            raise ValueError("hold must be >= 0")


class PersistenceFilter:
    def __init__(self, settings: PersistenceSettings | None = None) -> None:
        self.settings = settings or PersistenceSettings()
        self.tracks: list[_Track] = []

    def reset(self) -> None:
        self.tracks = []

    def __call__(self, dets: Detections) -> Detections:
        s = self.settings
        ious = box_iou(np.array([t.box for t in self.tracks]).reshape(-1, 4), dets.boxes)
        matched_dets: set[int] = set()
        for ti, track in enumerate(self.tracks):
            j = int(ious[ti].argmax()) if ious.shape[1] else -1
            hit = j >= 0 and ious[ti, j] >= MATCH_IOU and j not in matched_dets
            if hit:
                matched_dets.add(j)
                track.box, track.score, track.cls = dets.boxes[j], float(dets.scores[j]), int(dets.classes[j])
                track.since_seen = 0
            else:
                track.since_seen += 1
            track.hits.append(hit)
        for j in range(len(dets)):
            if j not in matched_dets:
                self.tracks.append(_Track(dets.boxes[j], float(dets.scores[j]), int(dets.classes[j]), deque([True])))
        shown = []
        for track in self.tracks:
            while len(track.hits) > s.n:
                track.hits.popleft()
            if sum(track.hits) >= s.k:
                track.confirmed = True
            if track.confirmed and track.since_seen <= s.hold:
                shown.append(track)
        self.tracks = [t for t in self.tracks if t.since_seen <= max(s.hold, s.n)]
        if not shown:
            return Detections()
        return Detections(np.array([t.box for t in shown], np.float32), np.array([t.score for t in shown], np.float32),
                          np.array([t.cls for t in shown], np.int64))
