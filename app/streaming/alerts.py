"""When to sound the alert for a new polyp: on each new alarm, but not more often than
``min_interval_s``.

A box that disappears for a moment and comes back (the scope moves, a fold hides it) is
the same polyp; beeping again each time trains people to ignore the sound, which commercial
CADe systems avoid by limiting it. No Qt, no clock of its own: the caller passes the time,
so the rule is testable without waiting.
"""

from __future__ import annotations

DEFAULT_MIN_INTERVAL_S = 5.0


class AlertLimiter:
    def __init__(self, min_interval_s: float = DEFAULT_MIN_INTERVAL_S) -> None:
        self.min_interval_s = min_interval_s
        self._showing = False
        self._last_sound: float | None = None

    def update(self, boxes_shown: bool, now: float) -> bool:
        """Whether to sound now: a box appears where none was, and the last sound was at
        least ``min_interval_s`` ago."""
        new_alarm = boxes_shown and not self._showing
        self._showing = boxes_shown
        if not new_alarm:
            return False
        if self._last_sound is not None and now - self._last_sound < self.min_interval_s:
            return False
        self._last_sound = now
        return True
