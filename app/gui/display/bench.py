"""What each step of getting a frame onto the screen costs, before and after issue 14.

    QT_QPA_PLATFORM=offscreen python -m app.gui.display.bench --frame-size 1920x1080 \\
        --view 1280x720 --json-out docs/display-bench.json

Before: the overlay rasterised into a copy of the full frame (OpenCV), BGR reversed to RGB
and deep-copied into a ``QImage`` (worker thread), then a smooth scale of the full frame
by the painter (GUI thread). After: one OpenCV resize to the size on screen fused with the
conversion to Qt's 32-bit layout (worker thread), then an unscaled blit and the boxes drawn
as vectors (GUI thread). Each step is timed alone, many times, on the same frame; the
figures are medians in milliseconds, and the ratio of the totals is what to compare
between machines. A frame shown 1:1 (the clinical view full screen at the frame's own
size) needs no resize at all: that row is timed too.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np


def median_ms(step: Callable[[], object], repeats: int) -> float:
    step()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return round(float(np.median(times)) * 1e3, 3)


def old_to_qimage(bgr: np.ndarray):
    """The worker's conversion before issue 14: reverse the channels, then deep-copy."""
    from PySide6.QtGui import QImage

    rgb = np.ascontiguousarray(bgr[:, :, ::-1])
    h, w = rgb.shape[:2]
    return QImage(rgb.data, w, h, 3 * w, QImage.Format.Format_RGB888).copy()


def run(frame_size: tuple[int, int], view: tuple[int, int], repeats: int) -> dict:
    from PySide6.QtCore import QRectF
    from PySide6.QtGui import QImage, QPainter
    from PySide6.QtWidgets import QApplication

    from app.gui.display.canvas import VideoCanvas
    from app.gui.display.picture import display_size, make_picture
    from app.overlay import HudInfo, draw_overlay
    from engine.detections import Detections

    QApplication.instance() or QApplication(sys.argv[:1])
    w, h = frame_size
    rng = np.random.default_rng(0)
    frame = cv2.GaussianBlur(rng.integers(0, 255, (h, w, 3)).astype(np.uint8), (0, 0), 4)
    dets = Detections(np.array([[w * 0.3, h * 0.3, w * 0.55, h * 0.6]], np.float32), np.array([0.8], np.float32),
                      np.zeros(1, np.int64))
    hud = HudInfo(60.0, 60.0, 60.0, 20.0, 8.0, "onnxruntime-cpu fp32")
    shown = display_size((w, h), view)
    target = QImage(view[0], view[1], QImage.Format.Format_RGB32)
    fit = QRectF((view[0] - shown[0]) / 2, (view[1] - shown[1]) / 2, shown[0], shown[1])

    def paint(image: QImage, smooth: bool) -> None:
        painter = QPainter(target)
        if smooth:
            painter.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform)
        painter.drawImage(fit, image)
        painter.end()

    annotated = draw_overlay(frame, dets, ("polyp",), hud)
    old_image = old_to_qimage(annotated)
    before = {
        "overlay into a full-frame copy (worker)": median_ms(lambda: draw_overlay(frame, dets, ("polyp",), hud), repeats),
        "BGR->RGB + deep copy into QImage (worker)": median_ms(lambda: old_to_qimage(annotated), repeats),
        "smooth scale + paint (GUI thread)": median_ms(lambda: paint(old_image, True), repeats),
    }
    picture = make_picture(frame, dets, 0, 0.0, view, hud)
    canvas = VideoCanvas()
    canvas.resize(*view)
    canvas.set_picture(picture)

    def paint_canvas() -> None:
        canvas.render(target)  # the canvas's own paintEvent, into an image of the view's size

    after = {
        "resize to screen size + BGRA, no copy (worker)": median_ms(lambda: make_picture(frame, dets, 0, 0.0, view, hud), repeats),
        "blit + vector boxes + HUD (GUI thread)": median_ms(paint_canvas, repeats),
    }
    one_to_one = {
        "BGRA only, no resize (worker)": median_ms(lambda: make_picture(frame, dets, 0, 0.0, frame_size, hud), repeats),
    }
    # Qt takes BGR as it is (Format_BGR888, no copy at all), but its raster painter then
    # converts it to its 32-bit layout at every paint, on the GUI thread; converting once on
    # the worker (above) and blitting 32-bit is the cheaper split. Both blits, at the size on screen:
    small = cv2.resize(frame, shown, interpolation=cv2.INTER_LINEAR)
    as_bgr = QImage(small.data, shown[0], shown[1], small.strides[0], QImage.Format.Format_BGR888)
    bgra = cv2.cvtColor(small, cv2.COLOR_BGR2BGRA)
    as_rgb32 = QImage(bgra.data, shown[0], shown[1], bgra.strides[0], QImage.Format.Format_RGB32)
    blits = {"blit BGR888 as captured (GUI thread converts)": median_ms(lambda: paint(as_bgr, False), repeats),
             "blit RGB32 (converted on the worker)": median_ms(lambda: paint(as_rgb32, False), repeats)}
    total_before, total_after = sum(before.values()), sum(after.values())
    return {"frame": list(frame_size), "view": list(view), "shown_at": list(shown), "repeats": repeats,
            "before_ms": before, "after_ms": after, "shown_1to1_ms": one_to_one, "gui_thread_blit_ms": blits,
            "total_before_ms": round(total_before, 3), "total_after_ms": round(total_after, 3),
            "gui_thread_before_ms": before["smooth scale + paint (GUI thread)"],
            "gui_thread_after_ms": after["blit + vector boxes + HUD (GUI thread)"],
            "speed_up": round(total_before / total_after, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frame-size", default="1920x1080", help="WxH of the frames (default 1920x1080)")
    parser.add_argument("--view", default="1280x720", help="WxH of the video area on screen (default 1280x720)")
    parser.add_argument("--repeats", type=int, default=200)
    parser.add_argument("--json-out", help="write the figures here")
    args = parser.parse_args()
    size = lambda text: tuple(int(v) for v in text.lower().split("x"))  # noqa: E731
    report = run(size(args.frame_size), size(args.view), args.repeats)
    text = json.dumps(report, indent=2)
    print(text)
    if args.json_out:
        Path(args.json_out).write_text(text + "\n")


if __name__ == "__main__":
    main()
