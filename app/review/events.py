"""Events: runs of consecutive frames in which a box is shown.

What a viewer sees is what the persistence filter lets through (a box once seen in k of
the last n frames, held for a few frames after), so events are built from the filter's
output, exactly as the app and ``detect`` apply it: the same filter class, the same
settings, frame by frame in order. An event is therefore one alarm on screen, from the
first frame a box appears to the last.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

from app.review.frames import FrameRecord
from app.streaming.persistence import PersistenceFilter, PersistenceSettings
from engine.detections import Detections


@dataclass(frozen=True)
class Event:
    start: int                 # first frame with a shown box
    end: int                   # last frame with a shown box (inclusive)
    first_hit: int             # first raw detection of the persistence window that started it
    peak_frame: int
    peak_score: float
    peak_box: tuple[float, float, float, float]
    fps: float

    @property
    def frames(self) -> int:
        return self.end - self.start + 1

    @property
    def start_s(self) -> float:
        return self.start / self.fps

    @property
    def end_s(self) -> float:
        return (self.end + 1) / self.fps

    def overlap(self, start: int, end: int) -> int:
        """Frames shared with the inclusive range ``start..end``."""
        return max(0, min(self.end, end) - max(self.start, start) + 1)

    def to_json(self) -> dict:
        row = asdict(self)
        row["peak_box"] = [round(v, 2) for v in self.peak_box]
        row["peak_score"] = round(self.peak_score, 5)
        return {**row, "start_s": round(self.start_s, 3), "end_s": round(self.end_s, 3)}


def above(dets: Detections, conf: float) -> Detections:
    """The detections a detector run at ``conf`` would have kept (``scores > conf``, as
    :func:`engine.postprocess.postprocess`): greedy NMS never lets a lower score suppress a
    higher one, so filtering a lower-threshold run gives exactly the higher-threshold run."""
    keep = dets.scores > conf
    return Detections(dets.boxes[keep], dets.scores[keep], dets.classes[keep])


def shown_per_frame(frames: Sequence[FrameRecord], conf: float,
                    persistence: PersistenceSettings | None) -> list[Detections]:
    """What the window would draw on each frame (``persistence=None``: the raw boxes)."""
    filt = PersistenceFilter(persistence) if persistence is not None else None
    return [filt(above(f.detections, conf)) if filt else above(f.detections, conf) for f in frames]


def find_events(frames: Sequence[FrameRecord], conf: float, persistence: PersistenceSettings | None,
                fps: float, shown: Sequence[Detections] | None = None) -> list[Event]:
    """Events of a recording's frames (in order; a gap in the indices ends an event).
    ``shown``: :func:`shown_per_frame` of the same arguments, if already computed (it is
    the expensive half: the persistence filter over every frame)."""
    if shown is None:
        shown = shown_per_frame(frames, conf, persistence)
    window = persistence.n if persistence is not None else 1
    events: list[Event] = []
    current: dict | None = None
    previous_index = None
    for i, (frame, dets) in enumerate(zip(frames, shown)):
        contiguous = previous_index is not None and frame.index == previous_index + 1
        previous_index = frame.index
        if current is not None and (not len(dets) or not contiguous):
            events.append(Event(**current, fps=fps))
            current = None
        if not len(dets):
            continue
        best = int(dets.scores.argmax())
        score, box = float(dets.scores[best]), tuple(float(v) for v in dets.boxes[best])
        if current is None:
            lead = [f.index for f in frames[max(0, i - window + 1):i + 1] if len(above(f.detections, conf))]
            current = {"start": frame.index, "end": frame.index, "first_hit": min(lead, default=frame.index),
                       "peak_frame": frame.index, "peak_score": score, "peak_box": box}
        current["end"] = frame.index
        if score > current["peak_score"]:
            current.update(peak_frame=frame.index, peak_score=score, peak_box=box)
    if current is not None:
        events.append(Event(**current, fps=fps))
    return events


def event_at(events: Sequence[Event], frame: int) -> int | None:
    """Index of the event containing ``frame``, else None."""
    for k, event in enumerate(events):
        if event.start <= frame <= event.end:
            return k
    return None


def next_event(events: Sequence[Event], frame: int, direction: int) -> int | None:
    """Index of the first event starting after ``frame`` (direction +1), or the last one
    starting before it (-1); None at either end."""
    if direction > 0:
        return next((k for k, e in enumerate(events) if e.start > frame), None)
    return next((k for k in range(len(events) - 1, -1, -1) if events[k].start < frame), None)
