"""Frames made ready for the screen on the display worker's thread, so the GUI thread only
blits them.

At 1080p the old path cost more than the network: drawing the overlay into a copy of the
full frame, reversing BGR to RGB (a strided copy of 6 MB) and deep-copying the result into
a ``QImage``, then a smooth scale of 2 million pixels by the painter on the GUI thread.
Here the frame is scaled once, to the size it will have on screen, by OpenCV on the
worker thread, and converted to Qt's native 32-bit layout in the same pass (BGRA bytes
are ``Format_RGB32`` on little-endian machines). The ``QImage`` wraps that new buffer
without a copy: the :class:`Picture` owns the buffer and hands it over to the GUI thread
whole, so nothing reuses it while it is shown. The overlay is not rasterised into the
frame at all: the canvas draws it as vectors at display resolution
(:mod:`app.gui.display.canvas`). ``python -m app.gui.display.bench`` measures each step.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from PySide6.QtGui import QImage

from app.overlay import HudInfo
from engine.detections import Detections


@dataclass(frozen=True)
class Picture:
    """One frame as the window shows it, with what to draw over it."""

    image: QImage               # display-ready, wraps ``pixels``
    pixels: np.ndarray          # the buffer behind ``image``; kept alive with it
    frame_size: tuple[int, int]  # (width, height) of the frame as captured
    shown: Detections           # boxes in frame pixels
    index: int
    captured: float             # time.perf_counter() when the frame was captured
    hud: HudInfo | None = None


def display_size(frame_size: tuple[int, int], target: tuple[int, int] | None) -> tuple[int, int]:
    """The frame's size once fitted inside ``target`` (aspect kept, never enlarged: the
    painter enlarges, which costs nothing extra for small frames)."""
    w, h = frame_size
    if not target or target[0] <= 0 or target[1] <= 0:
        return w, h
    scale = min(1.0, target[0] / w, target[1] / h)
    return max(1, round(w * scale)), max(1, round(h * scale))


def to_display(bgr: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``bgr`` scaled to ``size`` and laid out as 32-bit BGRA, in a new buffer.

    Below half size a bilinear resize skips source pixels (aliasing on fine mucosal
    texture), and OpenCV's area averaging at an arbitrary factor costs about 8 ms at 1080p;
    at exactly half it takes a fast path (about 0.5 ms). So the frame is halved by area
    averaging while it is more than twice the target, and finished bilinearly."""
    h, w = bgr.shape[:2]
    while w >= 2 * size[0] and h >= 2 * size[1]:
        w, h = w // 2, h // 2
        bgr = cv2.resize(bgr, (w, h), interpolation=cv2.INTER_AREA)
    if (w, h) != size:
        bgr = cv2.resize(bgr, size, interpolation=cv2.INTER_LINEAR)
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2BGRA)


def make_picture(bgr: np.ndarray, shown: Detections, index: int, captured: float,
                 target: tuple[int, int] | None = None, hud: HudInfo | None = None) -> Picture:
    h, w = bgr.shape[:2]
    pixels = to_display(bgr, display_size((w, h), target))
    image = QImage(pixels.data, pixels.shape[1], pixels.shape[0], pixels.strides[0], QImage.Format.Format_RGB32)
    return Picture(image, pixels, (w, h), shown, index, captured, hud)
