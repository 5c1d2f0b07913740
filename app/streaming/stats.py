"""Frame rates, drops and capture-to-display latency, from each frame's own timestamps."""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass

import numpy as np

WINDOW_SECONDS = 2.0
LATENCY_HISTORY = 5000


def _rate(stamps: deque[float]) -> float:
    if len(stamps) < 2 or stamps[-1] <= stamps[0]:
        return 0.0
    return (len(stamps) - 1) / (stamps[-1] - stamps[0])


@dataclass(frozen=True)
class StatsSnapshot:
    capture_fps: float
    inference_fps: float
    display_fps: float
    dropped: int
    frames_shown: int
    latency_p50_ms: float
    latency_p99_ms: float
    inference_ms: float


class PipelineStats:
    """Thread-safe; FPS over the last ``WINDOW_SECONDS``, latency over the whole run."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._captured: deque[float] = deque()
        self._inferred: deque[float] = deque()
        self._shown: deque[float] = deque()
        self.latencies_ms: deque[float] = deque(maxlen=LATENCY_HISTORY)
        self.inference_ms: deque[float] = deque(maxlen=200)
        self.dropped = 0
        self.frames_shown = 0
        self.frames_inferred = 0  # frames the detector ran on (the rest carried the last boxes)

    @staticmethod
    def _push(stamps: deque[float], t: float) -> None:
        stamps.append(t)
        while stamps and t - stamps[0] > WINDOW_SECONDS:
            stamps.popleft()

    def captured(self, t: float) -> None:
        with self._lock:
            self._push(self._captured, t)

    def inferred(self, start: float, end: float) -> None:
        with self._lock:
            self._push(self._inferred, end)
            self.inference_ms.append((end - start) * 1e3)
            self.frames_inferred += 1

    def shown(self, captured: float, t: float) -> None:
        with self._lock:
            self._push(self._shown, t)
            self.latencies_ms.append((t - captured) * 1e3)
            self.frames_shown += 1

    def add_dropped(self, n: int = 1) -> None:
        with self._lock:
            self.dropped += n

    def snapshot(self) -> StatsSnapshot:
        with self._lock:
            lat = np.asarray(self.latencies_ms) if self.latencies_ms else np.zeros(1)
            return StatsSnapshot(
                _rate(self._captured), _rate(self._inferred), _rate(self._shown), self.dropped,
                self.frames_shown, float(np.percentile(lat, 50)), float(np.percentile(lat, 99)),
                float(np.median(self.inference_ms)) if self.inference_ms else 0.0,
            )
