"""False alarms on polyp-free frames, in the units a clinician feels them.

Every box on a frame without a polyp is a false alarm. On a stream of such frames at
:data:`FRAMES_PER_SECOND` (a colonoscopy video), the share of frames with at least one box
becomes alarms per minute: each such frame flashes a box on screen. That is the count
before any temporal filter (the app's persistence filter lowers what is drawn); commercial
CADe systems report about 2 false alarms per minute after theirs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

FRAMES_PER_SECOND = 25.0
Z95 = 1.959964  # the two-sided 95% normal quantile


def wilson_interval(hits: int, n: int, z: float = Z95) -> tuple[float, float]:
    """95% Wilson score interval of a proportion ``hits / n``. Unlike the plain normal
    interval it stays inside [0, 1] and is not zero-width at 0 or n hits: 0 false-alarm
    frames out of 72 still allows up to 5% (Wilson 1927; Brown, Cai and DasGupta 2001)."""
    if n <= 0 or not 0 <= hits <= n:
        raise ValueError(f"need 0 <= hits <= n and n > 0, got {hits} of {n}")
    p = hits / n
    scale = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / scale
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / scale
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass(frozen=True)
class FalseAlarms:
    """False-alarm figures of a set of polyp-free frames at one score threshold."""

    threshold: float
    frames: int
    false_boxes_per_frame: float
    frames_with_false_box: float    # share of frames, 0..1
    false_alarms_per_minute: float  # frames with a box per minute at FRAMES_PER_SECOND
    # 95% Wilson interval of that share: on 72 frames, one frame more or less is 1.4 points.
    frames_with_false_box_ci95: tuple[float, float] = field(default=(0.0, 1.0))

    def as_dict(self) -> dict[str, float | list[float]]:
        d = asdict(self)
        d["frames_with_false_box_ci95"] = list(self.frames_with_false_box_ci95)
        return d


def false_alarms(frame_scores: Sequence[np.ndarray], threshold: float,
                 fps: float = FRAMES_PER_SECOND) -> FalseAlarms:
    """Figures at ``threshold`` for frames whose detections scored ``frame_scores`` (one
    array per frame; a box counts when its score is ``> threshold``, compared in float32,
    as the runtime keeps it)."""
    frames = len(frame_scores)
    if frames == 0:
        raise ValueError("no polyp-free frames to count false alarms on")
    t = np.float32(threshold)
    boxes = np.array([int((np.asarray(s, np.float32) > t).sum()) for s in frame_scores])
    with_box = int((boxes > 0).sum())
    share = with_box / frames
    return FalseAlarms(float(threshold), frames, float(boxes.mean()), share, share * fps * 60.0,
                       wilson_interval(with_box, frames))


def threshold_for_alarm_share(frame_scores: Sequence[np.ndarray], share: float) -> float:
    """The lowest threshold at which at most ``share`` of the frames have a box (a box
    counts when its score is ``> threshold``): for a false-alarm budget, how low the
    threshold may go. Reported by ``val`` at a 2% budget."""
    best = np.sort(np.array([float(np.max(s)) if len(s) else 0.0 for s in frame_scores], np.float32))[::-1]
    allowed = int(np.floor(share * len(best)))
    if allowed >= len(best):
        return 0.0
    return float(best[allowed])
