"""The one-slot hand-off between pipeline stages.

A live pipeline must never queue: if inference is slower than the camera, a queue grows
and every box arrives later than the last. ``LatestSlot`` holds one item; a new item
replaces a waiting one (which is counted as dropped), so the consumer always gets the
newest. For offline replay as fast as possible, ``lossless=True`` makes the producer wait
instead, so every frame is processed.
"""

from __future__ import annotations

import threading
from typing import Generic, TypeVar

T = TypeVar("T")


class Closed(Exception):
    """The slot was closed and holds nothing more."""


class LatestSlot(Generic[T]):
    def __init__(self, lossless: bool = False) -> None:
        self.lossless = lossless
        self._item: T | None = None
        self._full = False
        self._closed = False
        self._cond = threading.Condition()
        self.dropped = 0

    def put(self, item: T) -> None:
        with self._cond:
            if self.lossless:
                while self._full and not self._closed:
                    self._cond.wait()
            if self._closed:
                return
            if self._full:
                self.dropped += 1
            self._item, self._full = item, True
            self._cond.notify_all()

    def get(self, timeout: float | None = None) -> T:
        """The newest item; raises ``TimeoutError`` after ``timeout`` s, ``Closed`` once
        closed and empty."""
        with self._cond:
            if not self._cond.wait_for(lambda: self._full or self._closed, timeout):
                raise TimeoutError
            if not self._full:
                raise Closed
            item, self._item, self._full = self._item, None, False
            self._cond.notify_all()
            return item  # type: ignore[return-value]

    def close(self) -> None:
        """No more items: a waiting ``get`` returns what is left, then raises ``Closed``."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
