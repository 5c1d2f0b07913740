"""The bridge between the streaming pipeline and Qt.

A ``StreamWorker`` consumes pipeline results on its own thread, scales each frame to the
size it will have on screen and emits it as a :class:`app.gui.picture.Picture` (which owns
its buffer: nothing reuses it while the GUI thread shows it) together with the stats. The
GUI slot only swaps the picture; the canvas draws the boxes over it as vectors. To stop,
the worker sets a flag, stops the pipeline and is joined; nothing is terminated.

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

from app.gui.display.picture import Picture, make_picture
from app.overlay import HudInfo, OverlayStyle, draw_overlay
from app.streaming.pipeline import Result, StreamPipeline
from app.streaming.stats import StatsSnapshot
from engine.detections import Detections


class StreamWorker(QObject):
    frame_ready = Signal(object, object, object)  # Picture, Result, StatsSnapshot
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
        #: (width, height) in device pixels to scale frames to; set by the GUI thread when
        #: the canvas resizes (a tuple is replaced whole, never half-written)
        self.target_size: tuple[int, int] | None = None
        self._last_hud: HudInfo | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._painted = threading.Event()  # the last emitted picture has been shown
        self._painted.set()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="display", daemon=True)
        self._thread.start()

    def _warm_up(self) -> None:
        """Blank frames of the source's size through the display path, on this thread, before
        the pipeline starts: the first conversions of a new frame size cost tens of
        milliseconds, which on a 60 fps feed would drop the first frames. Three pictures
        are held at once, as many as are alive while streaming (on screen, in flight, being
        made): the allocator then keeps that much memory in its heap instead of mapping
        fresh pages (page faults on every byte) for the first real frames. The stats snapshot
        is taken once too: numpy's first percentile costs over 10 ms (its lazy set-up)."""
        self.pipeline.stats.snapshot()
        info = getattr(self.pipeline.source, "info", None)
        if info is not None and getattr(info, "width", 0) and getattr(info, "height", 0):
            blank = np.zeros((info.height, info.width, 3), np.uint8)
            held = [make_picture(blank, Detections(), 0, 0.0, self.target_size) for _ in range(3)]
            del held

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
            self._warm_up()
            if self._stop.is_set():  # stopped during the warm-up (a pipeline started after its stop exits at once)
                return
            self.pipeline.start()
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

    def render(self, result: Result) -> tuple[Picture, Result, StatsSnapshot]:
        snap = self.pipeline.stats.snapshot()
        hud = HudInfo(snap.capture_fps, snap.inference_fps, snap.display_fps, snap.latency_p50_ms,
                      result.stage_ms[1], self.backend)
        self._last_hud = hud
        picture = make_picture(result.frame.image, result.shown, result.frame.index, result.frame.captured,
                               self.target_size, hud)
        return picture, result, snap

    def annotate(self, image: np.ndarray, shown) -> np.ndarray:
        """``image`` with ``shown`` rasterised into it at full resolution, as recordings and
        snapshots keep it (the window draws the same boxes as vectors)."""
        if not self.show_overlay:
            return image
        return draw_overlay(image, shown, self.class_names, self._last_hud, self.style)

    def mark_shown(self, result: Result) -> None:
        """Called by the GUI thread once ``result`` is on screen; lets the next one through."""
        self.pipeline.mark_shown(result, time.perf_counter())
        self._painted.set()
