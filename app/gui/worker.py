"""The bridge between the streaming pipeline and Qt.

A ``StreamWorker`` consumes pipeline results on its own thread, draws the overlay there,
and emits an owned ``QImage`` (a deep copy, so it never points into a numpy buffer that
the next frame reuses) together with the stats. The GUI slot only swaps the picture. To
stop, the worker sets a flag, stops the pipeline and is joined; nothing is terminated.

At most one picture is in flight to the GUI thread: the worker takes the next result
from the pipeline only after the window has painted the last one (:meth:`mark_shown`).
Without that gate a GUI thread that falls behind (a slow paint, a window being dragged,
an unpaced replay) would let queued pictures pile up in Qt's event queue, growing memory
and latency; with it, the pipeline's one-slot hand-off drops stale results (live) or
holds inference back (lossless replay), exactly as it does for the headless consumer.
"""

from __future__ import annotations

import threading
import time

import numpy as np
from PySide6.QtCore import QObject, Signal
from PySide6.QtGui import QImage

from app.overlay import HudInfo, OverlayStyle, draw_overlay
from app.streaming.pipeline import Result, StreamPipeline
from app.streaming.stats import StatsSnapshot


def to_qimage(bgr: np.ndarray) -> QImage:
    """An owned RGB QImage of a BGR frame."""
    rgb = np.ascontiguousarray(bgr[:, :, ::-1])
    h, w = rgb.shape[:2]
    return QImage(rgb.data, w, h, 3 * w, QImage.Format.Format_RGB888).copy()


class StreamWorker(QObject):
    frame_ready = Signal(QImage, object, object)  # picture, Result, StatsSnapshot
    failed = Signal(str)
    finished = Signal()
    status = Signal(str)

    def __init__(self, pipeline: StreamPipeline, class_names: tuple[str, ...], backend: str,
                 style: OverlayStyle | None = None) -> None:
        super().__init__()
        self.pipeline = pipeline
        self.class_names = class_names
        self.backend = backend
        self.style = style or OverlayStyle()
        self.show_overlay = True
        self.last_raw: np.ndarray | None = None
        self.last_annotated: np.ndarray | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._painted = threading.Event()  # the last emitted picture has been shown
        self._painted.set()

    def start(self) -> None:
        self.pipeline.start()
        self._thread = threading.Thread(target=self._run, name="display", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self.pipeline.stop(timeout)
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    @property
    def running(self) -> bool:
        """Whether results are still coming (false once the source has ended or failed)."""
        return self._thread is not None and self._thread.is_alive()

    def _run(self) -> None:
        try:
            for result in self.pipeline.results(timeout=0.2):
                if self._stop.is_set():
                    break
                self._painted.clear()
                self.frame_ready.emit(*self.render(result))
                while not self._painted.wait(0.1):
                    if self._stop.is_set():
                        return
        except Exception as exc:  # reported in the window, never a silent crash
            self.failed.emit(f"{type(exc).__name__}: {exc}")
        finally:
            self.finished.emit()

    def render(self, result: Result) -> tuple[QImage, Result, StatsSnapshot]:
        snap = self.pipeline.stats.snapshot()
        hud = HudInfo(snap.capture_fps, snap.inference_fps, snap.display_fps, snap.latency_p50_ms,
                      result.stage_ms[1], self.backend)
        image = result.frame.image
        annotated = draw_overlay(image, result.shown, self.class_names, hud, self.style) if self.show_overlay else image
        self.last_raw, self.last_annotated = image, annotated
        return to_qimage(annotated), result, snap

    def mark_shown(self, result: Result) -> None:
        """Called by the GUI thread once ``result`` is on screen; lets the next one through."""
        self.pipeline.mark_shown(result, time.perf_counter())
        self._painted.set()
