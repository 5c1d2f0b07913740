"""False alarms on polyp-free frames, in the units a clinician feels them.

Every box on a frame without a polyp is a false alarm. On a stream of such frames at
:data:`FRAMES_PER_SECOND` (a colonoscopy video), the share of frames with at least one box
becomes alarms per minute: each such frame flashes a box on screen. That is the count
before any temporal filter (the app's persistence filter lowers what is drawn); commercial
CADe systems report about 2 false alarms per minute after theirs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

FRAMES_PER_SECOND = 25.0


@dataclass(frozen=True)
class FalseAlarms:
    """False-alarm figures of a set of polyp-free frames at one score threshold."""

    threshold: float
    frames: int
    false_boxes_per_frame: float
    frames_with_false_box: float    # share of frames, 0..1
    false_alarms_per_minute: float  # frames with a box per minute at FRAMES_PER_SECOND

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


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
    share = float((boxes > 0).mean())
    return FalseAlarms(float(threshold), frames, float(boxes.mean()), share, share * fps * 60.0)


def threshold_for_alarm_share(frame_scores: Sequence[np.ndarray], share: float) -> float:
    """The lowest threshold at which at most ``share`` of the frames have a box (a box
    counts when its score is ``> threshold``): for a false-alarm budget, how low the
    threshold may go. Reported by ``val`` at a 2% budget."""
    best = np.sort(np.array([float(np.max(s)) if len(s) else 0.0 for s in frame_scores], np.float32))[::-1]
    allowed = int(np.floor(share * len(best)))
    if allowed >= len(best):
        return 0.0
    return float(best[allowed])
