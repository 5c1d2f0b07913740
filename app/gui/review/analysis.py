"""The background pass over a recording: its own detector (one per thread), run at the
timeline's score floor, filling the cache beside the video (:mod:`app.review.timeline_cache`).

Results reach the GUI thread as signals: progress at most every 0.2 s (with the best score
of each frame so far, for the strip to draw as it fills), then the finished timeline or a
one-line error. ``stop()`` sets a flag the pass checks between frames and joins it; the
cache keeps what was done and the next opening resumes from there.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
from PySide6.QtCore import QObject, Signal

from app.review.frames import FrameRecord
from app.review.timeline_cache import SCORE_FLOOR, analyse
from engine.postprocess import DEFAULT_CONF

PROGRESS_EVERY_S = 0.2


def floor_for(threshold: float) -> float:
    """The score floor of a pass made for ``threshold``: the usual floor, or lower when the
    threshold itself is lower."""
    return min(SCORE_FLOOR, round(threshold * 0.9, 4))


class AnalysisRunner(QObject):
    progress = Signal(int, object)   # frames done, frame count (or None)
    finished = Signal(object)        # the Timeline (complete)
    failed = Signal(str)

    def __init__(self, video: str | Path, model: str | Path, *, backend: str = "auto", iou: float = 0.45,
                 floor: float | None = SCORE_FLOOR, threads: int = 1) -> None:
        """``floor=None``: the floor for the model's own operating threshold."""
        super().__init__()
        self.video, self.model = Path(video), Path(model)
        self.backend, self.iou, self.floor, self.threads = backend, iou, floor, threads
        self.scores = np.zeros(0, np.float32)   # best score per frame so far (NaN: not yet)
        self.done = 0
        #: the model's own operating threshold (from its metadata), known once the pass starts
        self.model_threshold: float | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_emit = 0.0

    def start(self) -> AnalysisRunner:
        self._thread = threading.Thread(target=self._run, name="analysis", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 2.0) -> None:
        """Stop after the current frame; waits at most ``timeout`` s (a pass still loading
        its model finishes that first, then stops; its signals are ignored by then)."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _record(self, record: FrameRecord, total: int | None) -> None:
        if record.index >= len(self.scores):
            grown = np.full(max(record.index + 1, total or 0), np.nan, np.float32)
            grown[:len(self.scores)] = self.scores
            self.scores = grown
        self.scores[record.index] = record.best_score
        self.done = record.index + 1
        now = time.monotonic()
        if now - self._last_emit >= PROGRESS_EVERY_S:
            self._last_emit = now
            self.progress.emit(self.done, total)

    def _run(self) -> None:
        from engine.detector import Detector

        detector = None
        try:
            detector = Detector(self.model, self.backend, conf=self.floor, iou=self.iou, threads=self.threads,
                                spin=False)
            self.model_threshold = detector.info.operating_threshold
            if self.floor is None:
                detector.conf = floor_for(self.model_threshold or DEFAULT_CONF)
            timeline = analyse(self.video, detector, progress=self._record, should_stop=self._stop.is_set)
            if timeline.complete:
                self.scores = timeline.best_scores()
                self.done = len(timeline.frames)
                self.progress.emit(self.done, timeline.frame_count)
                self.finished.emit(timeline)
        except Exception as exc:  # shown in the window, never raised into Qt
            self.failed.emit(f"analysis of {self.video.name} with {self.model.name}: {exc}")
        finally:
            if detector is not None:
                detector.close()
