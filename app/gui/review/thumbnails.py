"""Thumbnails of events: the peak frame of each, cropped around its box, read from the video
on a thread of their own (a few seeks; the timeline pass keeps no pictures)."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
from PySide6.QtCore import QObject, Signal
from PySide6.QtGui import QImage

from app.gui.display.picture import to_display
from app.review.events import Event
from app.streaming.sources import SourceError, VideoFileSource

THUMB_HEIGHT = 72


def crop_around(image: np.ndarray, box: Sequence[float], margin: float = 0.6) -> np.ndarray:
    """The box with ``margin`` of its size around it (within the frame), scaled to thumbnail height."""
    h, w = image.shape[:2]
    x1, y1, x2, y2 = box
    mx, my = (x2 - x1) * margin, (y2 - y1) * margin
    left, top = int(max(0, x1 - mx)), int(max(0, y1 - my))
    right, bottom = int(min(w, x2 + mx)), int(min(h, y2 + my))
    crop = image[top:bottom, left:right] if right > left and bottom > top else image
    scale = THUMB_HEIGHT / crop.shape[0]
    return cv2.resize(crop, (max(1, round(crop.shape[1] * scale)), THUMB_HEIGHT), interpolation=cv2.INTER_AREA)


def to_qimage(bgr: np.ndarray) -> QImage:
    """An owned QImage (a thumbnail is small: the copy costs nothing)."""
    bgra = to_display(bgr, (bgr.shape[1], bgr.shape[0]))
    return QImage(bgra.data, bgra.shape[1], bgra.shape[0], bgra.strides[0], QImage.Format.Format_RGB32).copy()


class ThumbnailLoader(QObject):
    """One loader per list of events, numbered (``generation``): the receiver drops
    thumbnails of a loader for an older list, still queued when the list changed."""

    ready = Signal(int, int, QImage)   # generation, event number, thumbnail

    def __init__(self, video: str | Path, events: Sequence[Event], generation: int = 0) -> None:
        super().__init__()
        self.video, self.events, self.generation = Path(video), list(events), generation
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="thumbnails", daemon=True)

    def start(self) -> ThumbnailLoader:
        self._thread.start()
        return self

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def stop(self) -> None:
        """Ask the thread to stop after its current frame (not waited for: the GUI thread
        never blocks on a seek in a long video)."""
        self._stop.set()

    def _run(self) -> None:
        try:
            source = VideoFileSource(self.video)
        except SourceError:
            return
        try:
            for k, event in enumerate(self.events):
                if self._stop.is_set():
                    return
                source.seek(event.peak_frame)
                frame = source.read()
                if frame is not None:
                    self.ready.emit(self.generation, k, to_qimage(crop_around(frame.image, event.peak_box)))
        finally:
            source.close()
