"""A/B: two models' events on the same recording, matched by the frames they share.

Events are paired greedily, most shared frames first, each at most once; what is left is
what only A raised or only B raised. With the engineer's marks, the diff says whether a
new model drops false alarms (only A, marked false alarm) or misses polyps (only A,
marked polyp).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from app.review.events import Event


@dataclass
class EventDiff:
    matched: list[tuple[Event, Event]] = field(default_factory=list)
    only_a: list[Event] = field(default_factory=list)
    only_b: list[Event] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        return {"matched": len(self.matched), "only_a": len(self.only_a), "only_b": len(self.only_b)}


def diff_events(a: Sequence[Event], b: Sequence[Event], tolerance: int = 0) -> EventDiff:
    """Pair events of ``a`` and ``b`` that share frames (or come within ``tolerance``
    frames of each other)."""
    pairs = sorted(((min(ea.end, eb.end) - max(ea.start, eb.start) + 1, i, j)
                    for i, ea in enumerate(a) for j, eb in enumerate(b)
                    if min(ea.end, eb.end) - max(ea.start, eb.start) + 1 > -tolerance), reverse=True)
    used_a, used_b, matched = set(), set(), []
    for _, i, j in pairs:
        if i not in used_a and j not in used_b:
            used_a.add(i)
            used_b.add(j)
            matched.append((a[i], b[j]))
    matched.sort(key=lambda pair: pair[0].start)
    return EventDiff(matched, [e for i, e in enumerate(a) if i not in used_a],
                     [e for j, e in enumerate(b) if j not in used_b])
