"""The hand-off between pipeline stages: a slot for the newest items, never a growing queue.

A live pipeline must never queue without bound: if inference is slower than the camera, a
queue grows and every box arrives later than the last. ``LatestSlot`` holds at most
``depth`` items (one by default); a new item arriving at a full slot pushes out the oldest
(counted as dropped), so the consumer is never more than ``depth`` items behind and gets
them in order. For offline replay as fast as possible, ``lossless=True`` makes the
producer wait instead, so every frame is processed.

Between capture and inference, depth 1: the detector should always see the newest frame.
When detection is capped (``max_detection_hz``) every frame is meant to be shown, and the
inference thread, idle half the time, catches up after a stall: frames covering 50 ms wait
(two at 25 fps, three at 60; ``app.streaming.pipeline.slack_depth``), and a backlog clears
at once, since a frame taken while a newer one waits is passed on without inference.
Between inference and display the same depth, at least 2, and one more when detection is
capped: results can arrive in pairs (a frame passed on right after one that was detected
on), or in a burst (a backlog passed on after a stall of inference, faster than the display
thread wakes), and the display, which shows every frame at the feed's rate, must not lose
one to a few milliseconds of painting, nor to a hiccup of the window system shorter than
50 ms. Either costs latency only while a stage is behind, a frame period or two beyond those
50 ms at most.
"""

from __future__ import annotations

import threading
from collections import deque
from typing import Generic, TypeVar

T = TypeVar("T")


class Closed(Exception):
    """The slot was closed and holds nothing more."""


class LatestSlot(Generic[T]):
    def __init__(self, lossless: bool = False, depth: int = 1) -> None:
        if depth < 1:
            raise ValueError(f"depth must be >= 1, got {depth}")
        self.lossless = lossless
        self.depth = depth
        self._items: deque[T] = deque()
        self._closed = False
        self._cond = threading.Condition()
        self.dropped = 0

    def set_depth(self, depth: int) -> None:
        """Change how many items the slot holds; a smaller depth drops the oldest at once
        (counted), so a consumer is never more than ``depth`` behind from now on."""
        if depth < 1:
            raise ValueError(f"depth must be >= 1, got {depth}")
        with self._cond:
            self.depth = depth
            if not self.lossless:
                while len(self._items) > depth:
                    self._items.popleft()
                    self.dropped += 1
            self._cond.notify_all()

    def put(self, item: T) -> None:
        with self._cond:
            if self.lossless:
                while len(self._items) >= self.depth and not self._closed:
                    self._cond.wait()
            if self._closed:
                return
            if len(self._items) >= self.depth:
                self._items.popleft()
                self.dropped += 1
            self._items.append(item)
            self._cond.notify_all()

    def get(self, timeout: float | None = None) -> T:
        """The oldest item held (the newest, at depth 1); raises ``TimeoutError`` after
        ``timeout`` s, ``Closed`` once closed and empty."""
        with self._cond:
            if not self._cond.wait_for(lambda: self._items or self._closed, timeout):
                raise TimeoutError
            if not self._items:
                raise Closed
            item = self._items.popleft()
            self._cond.notify_all()
            return item

    def waiting(self) -> int:
        """Items held now (a hint for the consumer; may change at once)."""
        with self._cond:
            return len(self._items)

    def close(self) -> None:
        """No more items: a waiting ``get`` returns what is left, then raises ``Closed``."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
