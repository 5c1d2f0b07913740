"""The engineer's verdict on each event -- polyp, false alarm or unsure -- saved beside
the video (``VIDEO.polypscope/marks.json``) and reloaded next time.

A mark belongs to a stretch of the recording (the frames of the event it was given to),
not to a model: a polyp is in the video whichever model found it. So the marks made while
reviewing model A label model B's events too, wherever they overlap, and an A/B
comparison can count marked false alarms for both. A polyp mark can carry an *onset*, the
frame where the polyp first comes into view, from which the time to first detection is
measured.

Every save is atomic (a temporary file renamed over the old one): a crash leaves the
previous marks, never half a file. A marks file that cannot be read is an error naming
it, and is never overwritten by an empty set.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from app.review.events import Event
from app.review.frames import ReviewFileError
from engine.atomic import atomic_write_text

POLYP, FALSE_ALARM, UNSURE = "polyp", "false alarm", "unsure"
LABELS = (POLYP, FALSE_ALARM, UNSURE)
FORMAT = 1


@dataclass(frozen=True)
class Mark:
    start: int
    end: int
    label: str
    onset: int | None = None      # polyp marks: the frame where the polyp comes into view
    model: str = ""               # the model whose event was marked (file name)
    marked_at: str = ""
    #: who set the onset: "engineer" (key O) or "first detection" (the event's first raw hit)
    onset_by: str = ""

    def __post_init__(self) -> None:
        if self.label not in LABELS:
            raise ValueError(f"unknown label {self.label!r}; one of {', '.join(LABELS)}")
        if self.end < self.start:
            raise ValueError(f"mark ends (frame {self.end}) before it starts (frame {self.start})")

    def overlap(self, start: int, end: int) -> int:
        return max(0, min(self.end, end) - max(self.start, start) + 1)


class MarkStore:
    """The marks of one recording; every change is saved at once."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.marks: list[Mark] = self._load()

    def _load(self) -> list[Mark]:
        if not self.path.is_file():
            return []
        try:
            raw = json.loads(self.path.read_text(encoding="utf-8"))
            if raw.get("format") != FORMAT:
                raise ValueError(f"format {raw.get('format')!r}, expected {FORMAT}")
            return [Mark(**m) for m in raw["marks"]]
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ReviewFileError(f"{self.path}: cannot read the marks ({type(exc).__name__}: {exc}); "
                                  "fix or move the file, it is not overwritten") from None

    def save(self) -> None:
        body = {"format": FORMAT, "marks": [asdict(m) for m in sorted(self.marks, key=lambda m: (m.start, m.end))]}
        atomic_write_text(self.path, json.dumps(body, indent=1) + "\n")

    def find(self, start: int, end: int) -> Mark | None:
        """The mark sharing the most frames with ``start..end`` (None if none overlaps)."""
        best = max(self.marks, key=lambda m: m.overlap(start, end), default=None)
        return best if best is not None and best.overlap(start, end) > 0 else None

    def label_of(self, event: Event) -> str | None:
        mark = self.find(event.start, event.end)
        return mark.label if mark else None

    def mark(self, event: Event, label: str | None, model: str = "") -> Mark | None:
        """Give ``event`` a label (``None`` clears it). It replaces the marks the event
        overlaps (an event is one alarm: after a threshold change merged two marked ones,
        the engineer's new verdict is on the merged one); an onset the engineer set on a
        polyp among them is kept."""
        replaced = [m for m in self.marks if m.overlap(event.start, event.end) > 0]
        self.marks = [m for m in self.marks if m not in replaced]
        new = None
        if label is not None:
            # an onset the engineer set survives any relabelling (2 then 1 by mistake), within the event
            set_by_hand = [min(m.onset, event.end) for m in replaced if m.onset_by == "engineer" and m.onset is not None]
            if set_by_hand:
                onset, onset_by = min(set_by_hand), "engineer"
            elif label == POLYP:
                onset, onset_by = event.first_hit, "first detection"
            else:
                onset, onset_by = None, ""
            new = Mark(event.start, event.end, label, onset, model, time.strftime("%Y-%m-%dT%H:%M:%S"), onset_by)
            self.marks.append(new)
        self.save()
        return new

    def set_onset(self, event: Event, frame: int) -> Mark:
        """The polyp of ``event``'s polyp mark comes into view at ``frame`` (at or before
        the event)."""
        mark = self.find(event.start, event.end)
        if mark is None or mark.label != POLYP:
            raise ValueError("mark the event as a polyp before setting when it comes into view")
        if frame > mark.end:
            raise ValueError(f"the onset (frame {frame}) must not come after the polyp's event ends (frame {mark.end})")
        updated = replace(mark, onset=frame, onset_by="engineer")
        self.marks = [updated if m is mark else m for m in self.marks]
        self.save()
        return updated

    def polyps(self) -> Sequence[Mark]:
        return [m for m in self.marks if m.label == POLYP]
