"""The widget the video is painted on, with the overlay drawn as vectors at display
resolution, and the warning that the picture is not live.

The frame arrives ready to blit (:mod:`app.gui.display.picture`); boxes, labels, the alert marker,
the HUD (engineer's view) or the status line (clinical view) are drawn by the painter on
top, so they stay sharp at any window size and the frame's pixels are never touched.

Box styles: a full outline, or corner brackets that mark the polyp while leaving it, and
the mucosa around it, unobstructed. Colour and thickness are settings.

Stale picture: the window reports the age of the frame on screen (now minus the moment it
was captured). When it passes ``stale_after_s`` -- the feed was lost, capture stalled,
inference fell behind -- a red banner says so with the time since the last fresh frame,
the picture is dimmed inside a red border, and its boxes turn grey (they mark where a polyp
was, not where it is). A frozen frame must never look live. A user's pause is said as a
pause, not an alarm.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
from PySide6.QtCore import QPointF, QRectF, Qt
from PySide6.QtGui import QColor, QFont, QFontMetricsF, QImage, QPainter, QPen
from PySide6.QtWidgets import QWidget

from app.gui.display.picture import Picture, make_picture
from app.overlay import BOX_SHAPES, HudInfo, OverlayStyle, bgr_of, corner_arm
from engine.detections import Detections

COLOURS = {"yellow": "#ffff00", "green": "#00ff66", "cyan": "#00e5ff", "white": "#ffffff", "magenta": "#ff40ff"}
DEFAULT_STALE_AFTER_S = 0.5
BANNER_RED = QColor(200, 0, 0, 230)
HUD_BACKGROUND = QColor(20, 20, 20, 210)
ALERT_COLOUR = QColor(255, 200, 0)
STALE_DIM = QColor(0, 0, 0, 140)       # laid over a picture that is not live
STALE_BOX_COLOUR = "#9a9a9a"           # boxes of a picture that is not live


@dataclass(frozen=True)
class BoxStyle:
    shape: str = "box"          # "box" or "corners"
    colour: str = "#ffff00"
    thickness: float = 2.0      # pixels on screen
    show_scores: bool = True
    corner_fraction: float = 0.25  # length of a bracket's arm, as a share of the shorter side

    def __post_init__(self) -> None:
        if self.shape not in BOX_SHAPES:
            raise ValueError(f"box shape {self.shape!r}: one of {', '.join(BOX_SHAPES)}")

    def overlay_style(self, hud: bool = True) -> OverlayStyle:
        """The same boxes for drawing into frames (recordings, snapshots, clips)."""
        return OverlayStyle(thickness=max(1, round(self.thickness)), show_scores=self.show_scores, hud=hud,
                            shape=self.shape, colour=bgr_of(self.colour), corner_fraction=self.corner_fraction)


def corner_segments(rect: QRectF, fraction: float) -> list[tuple[QPointF, QPointF]]:
    """The eight strokes of four corner brackets around ``rect``."""
    arm = corner_arm(min(rect.width(), rect.height()), fraction)
    left, top, right, bottom = rect.left(), rect.top(), rect.right(), rect.bottom()
    lines = []
    for x, y, dx, dy in ((left, top, 1, 1), (right, top, -1, 1), (left, bottom, 1, -1), (right, bottom, -1, -1)):
        lines.append((QPointF(x, y), QPointF(x + dx * arm, y)))
        lines.append((QPointF(x, y), QPointF(x, y + dy * arm)))
    return lines


class VideoCanvas(QWidget):
    """Paints the latest :class:`Picture`, fitted with its aspect ratio kept."""

    def __init__(self) -> None:
        super().__init__()
        self.picture: Picture | None = None
        self.box_style = BoxStyle()
        self.clinical = False           # status line instead of the HUD panel
        self.status_text = ""
        self.show_hud = True
        self.stale_after_s = DEFAULT_STALE_AFTER_S
        self.age_s = 0.0
        self.paused = False
        self.ended = False              # a recording played to its end: nothing claims to be live
        self.overlay = True
        self.extra: list[tuple[object, str]] = []  # more detections and their colours (A/B overlay)
        self.paints = 0                 # paint events so far (the window waits for its first real ones)
        self.setMinimumSize(320, 240)
        self.setAttribute(Qt.WidgetAttribute.WA_OpaquePaintEvent)

    def warm_up(self, frame_size: tuple[int, int]) -> None:
        """Paint a blank frame of ``frame_size`` with a box, its label, the HUD, the status
        line and the banner into an off-screen image once, and a black frame of that size
        onto the screen, before a stream starts: the first paints load fonts, set up the
        painter's paths and the window system's buffers (tens of milliseconds), which would
        otherwise fall on the first frames of a live feed and drop some."""
        w, h = frame_size
        dets = Detections(np.array([[w / 4, h / 4, w / 2, h / 2]], np.float32), np.array([0.5], np.float32),
                          np.zeros(1, np.int64))
        saved = (self.picture, self.clinical, self.age_s)
        for clinical in (False, True):
            self.picture = make_picture(np.zeros((h, w, 3), np.uint8), dets, 0, time.perf_counter(),
                                        self.target_size(), HudInfo(0, 0, 0, 0, 0, ""))
            self.clinical, self.age_s, self.status_text = clinical, self.stale_after_s + 1, self.status_text or " "
            target = QImage(max(1, self.width()), max(1, self.height()), QImage.Format.Format_RGB32)
            self.render(target)
        self.picture, self.clinical, self.age_s = saved
        if self.isVisible():
            self.set_picture(make_picture(np.zeros((h, w, 3), np.uint8), Detections(), 0, time.perf_counter(),
                                          self.target_size()))
            self.repaint()

    # -- state --------------------------------------------------------------------------
    def set_picture(self, picture: Picture) -> None:
        """Show ``picture``; its age counts from its capture, not from now: frames that keep
        coming but each arrive late (inference behind) keep the banner up."""
        self.picture = picture
        self.age_s = max(0.0, time.perf_counter() - picture.captured) if picture.captured else 0.0
        self.update()

    def target_size(self) -> tuple[int, int]:
        """The size in device pixels a frame should be scaled to before it is handed over."""
        ratio = self.devicePixelRatioF()
        return round(self.width() * ratio), round(self.height() * ratio)

    @property
    def stale(self) -> bool:
        return self.picture is not None and not (self.paused or self.ended) and self.age_s > self.stale_after_s

    def set_age(self, age_s: float) -> None:
        """The age of the frame on screen; repaints when the banner appears, changes or goes."""
        was_stale, old = self.stale, self.age_s
        self.age_s = age_s
        if self.stale != was_stale or (self.stale and int(old * 10) != int(age_s * 10)):
            self.update()

    def frame_rect(self) -> QRectF:
        """Where the frame lies in the widget (logical pixels)."""
        if self.picture is None:
            return QRectF()
        w, h = self.picture.frame_size
        scale = min(self.width() / w, self.height() / h)
        return QRectF((self.width() - w * scale) / 2, (self.height() - h * scale) / 2, w * scale, h * scale)

    # -- painting -----------------------------------------------------------------------
    def paintEvent(self, event) -> None:  # noqa: N802 - Qt's name
        self.paints += 1
        painter = QPainter(self)
        painter.fillRect(self.rect(), Qt.GlobalColor.black)
        stale = self.picture is not None and self.stale
        if self.picture is not None:
            target = self.frame_rect()
            image = self.picture.image
            ratio = self.devicePixelRatioF()
            if abs(image.width() - target.width() * ratio) > 1 or abs(image.height() - target.height() * ratio) > 1:
                painter.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform)  # only when the window just resized
            painter.drawImage(target, image)
            painter.setRenderHint(QPainter.RenderHint.Antialiasing)
            scale = target.width() / self.picture.frame_size[0]
            if stale:
                painter.fillRect(target, STALE_DIM)
            if self.overlay:
                self._draw_boxes(painter, target, scale, self.picture.shown,
                                 STALE_BOX_COLOUR if stale else self.box_style.colour)
                for dets, colour in self.extra:
                    self._draw_boxes(painter, target, scale, dets, STALE_BOX_COLOUR if stale else colour)
                if len(self.picture.shown) and not stale:
                    self._draw_alert(painter, target)
            if self.clinical:
                self._draw_status_line(painter, target)
            elif self.show_hud and self.picture.hud is not None:
                self._draw_hud(painter, target)
        self._draw_banner(painter)
        if stale:  # last: nothing may cover it
            border = self._stale_border()
            painter.setPen(QPen(BANNER_RED, border))
            painter.setBrush(Qt.BrushStyle.NoBrush)
            painter.drawRect(QRectF(self.rect()).adjusted(border / 2, border / 2, -border / 2, -border / 2))
        painter.end()

    def _draw_boxes(self, painter: QPainter, target: QRectF, scale: float, dets, colour: str) -> None:
        style = self.box_style
        pen = QPen(QColor(colour), style.thickness)
        pen.setCapStyle(Qt.PenCapStyle.SquareCap)
        font = QFont(self.font())
        font.setPixelSize(max(11, round(13 * min(2.0, target.width() / 800))))
        metrics = QFontMetricsF(font)
        painter.setFont(font)
        for box, score in zip(dets.boxes, dets.scores):
            rect = QRectF(target.left() + box[0] * scale, target.top() + box[1] * scale,
                          (box[2] - box[0]) * scale, (box[3] - box[1]) * scale)
            painter.setPen(pen)
            painter.setBrush(Qt.BrushStyle.NoBrush)
            if style.shape == "corners":
                for a, b in corner_segments(rect, style.corner_fraction):
                    painter.drawLine(a, b)
            else:
                painter.drawRect(rect)
            if style.show_scores:
                text = f"{float(score):.2f}"
                w, h = metrics.horizontalAdvance(text) + 6, metrics.height() + 2
                y = rect.top() - h - style.thickness if rect.top() - h - style.thickness >= target.top() else rect.bottom() + style.thickness
                label = QRectF(rect.left(), y, w, h)
                painter.fillRect(label, QColor(0, 0, 0, 170))
                painter.setPen(QColor(colour))
                painter.drawText(label, Qt.AlignmentFlag.AlignCenter, text)

    def _draw_alert(self, painter: QPainter, target: QRectF) -> None:
        size = max(12.0, min(target.width(), target.height()) / 20)
        painter.fillRect(QRectF(target.right() - size - 8, target.top() + 8, size, size), ALERT_COLOUR)

    def _text_block(self, painter: QPainter, lines: list[str], anchor_bottom_left: QPointF, pixel_size: int) -> None:
        font = QFont(self.font())
        font.setPixelSize(pixel_size)
        metrics = QFontMetricsF(font)
        w = max(metrics.horizontalAdvance(line) for line in lines) + 12
        h = metrics.height() * len(lines) + 8
        box = QRectF(anchor_bottom_left.x(), anchor_bottom_left.y() - h, w, h)
        painter.fillRect(box, HUD_BACKGROUND)
        painter.setFont(font)
        painter.setPen(QColor(235, 235, 235))
        for k, line in enumerate(lines):
            painter.drawText(QPointF(box.left() + 6, box.top() + 4 + metrics.ascent() + k * metrics.height()), line)

    def _draw_hud(self, painter: QPainter, target: QRectF) -> None:
        hud = self.picture.hud
        lines = [f"FPS  cap {hud.capture_fps:4.1f}  inf {hud.inference_fps:4.1f}  disp {hud.display_fps:4.1f}",
                 f"lat {hud.latency_ms:5.1f} ms  model {hud.inference_ms:4.1f} ms", hud.backend]
        self._text_block(painter, lines, target.bottomLeft(), max(11, round(12 * min(2.0, target.width() / 800))))

    def _stale_border(self) -> float:
        """The red frame's width around a picture that is not live."""
        return max(4.0, min(self.width(), self.height()) / 90)

    def _draw_status_line(self, painter: QPainter, target: QRectF) -> None:
        if self.status_text:
            inset = self._stale_border() if self.stale else 0.0  # inside the red frame, never under it
            self._text_block(painter, [self.status_line()], QPointF(target.left() + inset, self.height() - inset),
                             max(13, self.height() // 60))

    def status_line(self) -> str:
        """The clinical status line: model, fps, latency; during a stall the fps and latency
        of the last fresh frame would look healthy, so they give way to "no new frames"."""
        if self.stale:
            return self.status_text.split(" · ")[0] + " · no new frames"
        return self.status_text

    def _draw_banner(self, painter: QPainter) -> None:
        if self.ended and self.picture is not None:
            text, colour = "END OF RECORDING", QColor(60, 60, 60, 220)
        elif self.paused and self.picture is not None:
            text, colour = "PAUSED", QColor(60, 60, 60, 220)
        elif self.stale:
            text, colour = f"NOT LIVE: picture {self.age_s:.1f} s old", BANNER_RED
        else:
            return
        font = QFont(self.font())
        font.setPixelSize(max(16, self.height() // 24))
        font.setBold(True)
        height = QFontMetricsF(font).height() * 1.6
        bar = QRectF(0, 0, self.width(), height)
        painter.fillRect(bar, colour)
        painter.setFont(font)
        painter.setPen(QColor(255, 255, 255))
        painter.drawText(bar, Qt.AlignmentFlag.AlignCenter, text)
