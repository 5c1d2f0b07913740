"""capture -> inference -> consumer, each stage on its own thread, joined by one-slot
hand-offs (see :mod:`app.streaming.handoff`). No Qt here: the desktop app and the
headless ``detect`` command consume the same results.

Live (or real-time) sources drop stale frames instead of queueing them, so latency never
builds up; an offline replay (``lossless``) processes every frame as fast as it can.

``max_detection_hz`` caps how often the detector runs on a live or real-time feed: a frame
that comes sooner than that after the last one detected on is passed on at once with the
last detections (``Result.inferred`` is False). A 60 fps endoscope then shows all 60
frames a second, with detection at 30 per second, instead of dropping frames whenever one
inference takes longer than a frame period. Feeds at or below the cap (25 and 30 fps) are
detected on every frame; so is every frame of a lossless replay.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

from app.streaming.handoff import Closed, LatestSlot
from app.streaming.persistence import PersistenceFilter
from app.streaming.sources import Frame
from app.streaming.stats import PipelineStats
from engine.detections import Detections

#: How long a stage after capture may stall (a hiccup of the machine, the inference thread,
#: the GUI thread or the window system) before a frame waiting for it is dropped: 50 ms,
#: within the latency a live view can afford. At 25 fps two waiting frames cover 80 ms; at
#: 60 fps it takes three.
SLACK_S = 0.05

#: Never more than this many frames wait at a hand-off, whatever the source says its rate
#: is: a camera that reports 240 fps and delivers 30 must not hide 12 frames (400 ms) of lag.
MAX_SLACK_DEPTH = 4


def slack_depth(fps: float | None) -> int:
    """Frames (or results) a hand-off holds so that :data:`SLACK_S` of the feed survives a
    stall: at least two (results can come in pairs, see :mod:`app.streaming.handoff`), at
    most :data:`MAX_SLACK_DEPTH`."""
    if not fps or fps <= 0:
        return 2
    return min(MAX_SLACK_DEPTH, max(2, math.ceil(SLACK_S * fps - 1e-6)))


@dataclass
class Result:
    """A frame with its detections and the times it passed each stage (perf_counter s)."""

    frame: Frame
    detections: Detections   # what the model found (after NMS)
    shown: Detections        # what to draw (after the persistence filter)
    infer_start: float
    infer_end: float
    stage_ms: tuple[float, float, float]  # preprocess, inference, postprocess
    inferred: bool = True    # False: the previous frame's detections, reused (``max_detection_hz``)


class StreamPipeline:
    """Runs ``source`` through ``detector``; iterate :meth:`results` to consume.

    ``detector`` is any callable frame -> Detections (a ``engine.Detector``); when it has
    ``last_times``, per-stage timings are reported. Errors on the worker threads end the
    stream and are re-raised from :meth:`results` (never swallowed).
    """

    def __init__(self, source, detector: Callable, *, lossless: bool = False,
                 persistence: PersistenceFilter | None = None, max_detection_hz: float | None = None) -> None:
        self.source = source
        self.detector = detector
        self.persistence = persistence
        self.lossless = lossless
        self.stats = PipelineStats()
        info = getattr(source, "info", None)
        self._slack = slack_depth(getattr(info, "fps", None))
        self._frames: LatestSlot[Frame] = LatestSlot(lossless)
        self._results: LatestSlot[Result] = LatestSlot(lossless, depth=self._slack)
        self.max_detection_hz = max_detection_hz  # (sets the slots' depths)
        self._stop = threading.Event()
        self._stop_requested = False  # set by request_stop (a plain flag: signal-handler safe)
        #: True when :meth:`results` ended on a stop request before the source's end (a
        #: request that comes after the last result has cut nothing short).
        self.cut_short = False
        self._paused = threading.Event()
        self._error: BaseException | None = None
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()  # guards detector/persistence swaps from other threads
        self._control = threading.Lock()  # guards seek/step requests (never held during inference)
        self._seek_to: int | None = None
        self._steps = 0
        self._inference_ready = threading.Event()

    @property
    def max_detection_hz(self) -> float | None:
        return self._max_detection_hz

    @max_detection_hz.setter
    def max_detection_hz(self, hz: float | None) -> None:
        """Settable while running (the app's setting). Detection capped, every frame is meant
        to be shown: frames for :data:`SLACK_S` wait for inference, and one result more than
        that for the display, since a backlog of frames is passed on in a burst (see
        :mod:`app.streaming.handoff`). Uncapped, only the newest frame waits for inference."""
        self._max_detection_hz = hz or None
        self._frames.set_depth(self._slack if self._max_detection_hz else 1)
        self._results.set_depth(self._slack + 1 if self._max_detection_hz else self._slack)

    # -- control ---------------------------------------------------------------------
    def start(self) -> StreamPipeline:
        self._threads = [threading.Thread(target=self._guard(self._capture_loop), name="capture", daemon=True),
                         threading.Thread(target=self._guard(self._inference_loop), name="inference", daemon=True)]
        for t in self._threads:
            t.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._paused.clear()
        if hasattr(self.source, "stop"):
            self.source.stop()
        self._frames.close()
        self._results.close()
        for t in self._threads:
            if t is not threading.current_thread():
                t.join(timeout)

    def request_stop(self) -> None:
        """Ask for a stop from anywhere, a signal handler included: this only sets a flag
        (taking no lock that the interrupted code might hold). The consumer's
        :meth:`results` sees it before its next result, or within its ``timeout`` while no
        result comes, and then stops the stages; results already taken stay taken."""
        self._stop_requested = True

    @property
    def stop_requested(self) -> bool:
        return self._stop_requested

    def pause(self, paused: bool = True) -> None:
        if paused:
            self._paused.set()
        else:
            if hasattr(self.source, "set_speed"):  # restart real-time pacing from now
                self.source.set_speed(self.source.speed)
            self._paused.clear()

    @property
    def paused(self) -> bool:
        return self._paused.is_set()

    def seek(self, index: int) -> None:
        """Jump to frame ``index`` of a file or folder (applied by the capture thread)."""
        with self._control:
            self._seek_to = index

    def step(self, frames: int = 1) -> None:
        """While paused, let ``frames`` more frames through."""
        with self._control:
            self._steps += frames

    def set_detector(self, detector: Callable) -> None:
        with self._lock:
            self.detector = detector
            if self.persistence:
                self.persistence.reset()

    @property
    def dropped(self) -> int:
        return self._frames.dropped + self._results.dropped

    def dropped_by_stage(self) -> dict[str, int]:
        """Where frames were dropped: waiting for inference, or waiting for the display."""
        return {"before_inference": self._frames.dropped, "before_display": self._results.dropped}

    # -- consuming -------------------------------------------------------------------
    def results(self, timeout: float | None = None) -> Iterator[Result]:
        """Results in order until the source ends or :meth:`request_stop`; the caller should
        call :meth:`mark_shown` when a result reaches the screen (or the file). Pass a
        ``timeout`` if a stop may be requested while the source delivers nothing (a live
        outage): it bounds how long the request waits to be seen."""
        while True:
            if self._stop_requested:
                self.cut_short = True
                self.stop()
                break
            try:
                item = self._results.get(timeout)
            except Closed:
                break
            except TimeoutError:
                if self._stop.is_set():
                    break
                continue
            yield item
        if self._error is not None:
            raise self._error

    def mark_shown(self, result: Result, when: float | None = None) -> None:
        self.stats.shown(result.frame.captured, when if when is not None else time.perf_counter())
        self.stats.dropped = self.dropped

    # -- workers ---------------------------------------------------------------------
    def _guard(self, loop: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            try:
                loop()
            except BaseException as exc:  # surfaced to the consumer, not lost in a thread
                self._error = exc
                self._stop.set()
                self._frames.close()
                self._results.close()

        return run

    def _capture_loop(self) -> None:
        # Capture starts once the inference thread has run once: otherwise the first frames
        # of a real-time stream queue behind that first, slowest run and one is dropped.
        while not self._inference_ready.wait(0.05):
            if self._stop.is_set():
                self._frames.close()
                return
        while not self._stop.is_set():
            with self._control:
                seek, self._seek_to = self._seek_to, None
                stepping = self._steps > 0
                if stepping and self._paused.is_set():
                    self._steps -= 1
            if seek is not None:
                self.source.seek(seek)
                with self._lock:  # the inference thread runs the filter under this lock
                    if self.persistence:
                        self.persistence.reset()
            if self._paused.is_set() and not stepping:
                time.sleep(0.01)
                continue
            frame = self.source.read()
            if frame is None:
                break
            self.stats.captured(frame.captured)
            self._frames.put(frame)
        self._frames.close()

    def _warm_up_on_this_thread(self) -> None:
        """One run on a blank frame of the source's size, on the inference thread itself
        (its first run there is slower than the detector's own warm-up suggests, and it sizes
        the pre-processing buffers for this geometry). Detections are discarded."""
        info = getattr(self.source, "info", None)
        if info is not None and getattr(info, "width", 0) and getattr(info, "height", 0):
            with self._lock:
                self.detector(np.zeros((info.height, info.width, 3), np.uint8))

    def _inference_loop(self) -> None:
        try:
            self._warm_up_on_this_thread()
        finally:
            self._inference_ready.set()
        last: Result | None = None   # the last frame detected on
        previous: int | None = None  # the index of the last frame taken, detected on or not
        while not self._stop.is_set():
            try:
                frame = self._frames.get(timeout=0.1)
            except TimeoutError:
                continue
            except Closed:
                break
            follows, previous = previous is not None and frame.index == previous + 1, frame.index
            if last is not None and follows and (self._too_soon(last.frame, frame) or self._newer_waiting()):
                now = time.perf_counter()
                self._results.put(Result(frame, last.detections, last.shown, now, now, (0.0, 0.0, 0.0), False))
                continue
            with self._lock:
                start = time.perf_counter()
                dets = self.detector(frame.image)
                end = time.perf_counter()
                shown = self.persistence(dets) if self.persistence else dets
                times = getattr(self.detector, "last_times", None)
            stage = (times.preprocess, times.inference, times.postprocess) if times else (0.0, (end - start) * 1e3, 0.0)
            self.stats.inferred(start, end)
            last = Result(frame, dets, shown, start, end, stage)
            self._results.put(last)
        self._results.close()

    def _newer_waiting(self) -> bool:
        """With detection capped, a frame taken while a newer one already waits is passed on
        with the last boxes, and the detector takes the newer: every frame is still shown,
        and detection never works on a frame older than it must."""
        return bool(self.max_detection_hz) and not self.lossless and self._frames.waiting() > 0

    def _too_soon(self, detected: Frame, frame: Frame) -> bool:
        """Whether ``frame`` comes sooner after the last frame detected on than the cap
        allows (by the file's own clock where there is one, else by capture time). Only
        asked for a frame that directly follows the last one taken: after a seek, or a frame
        dropped before inference, the next one is always detected on."""
        hz = self.max_detection_hz  # once: the GUI thread may change it meanwhile
        if not hz or self.lossless or self._paused.is_set():
            return False  # (stepping while paused: every frame stepped to is detected on)
        if frame.position_ms is not None and detected.position_ms is not None:
            gap = (frame.position_ms - detected.position_ms) / 1000
        else:
            gap = frame.captured - detected.captured
        # 0.9: frames arrive with jitter; a 30 fps feed under a 30/s cap is detected on every frame
        return 0 <= gap < 0.9 / hz
