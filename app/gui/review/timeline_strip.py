"""The strip under the seek bar: every frame's best score against the threshold, the events
(coloured by their marks) and the play head. A click seeks there.

Each pixel column covers a run of frames and shows their highest score, so a one-frame
alarm in a 20-minute recording still shows. Frames not analysed yet are left dark; the
strip fills as the background pass goes.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PySide6.QtCore import QPointF, QRectF, Qt, Signal
from PySide6.QtGui import QColor, QImage, QPainter, QPen
from PySide6.QtWidgets import QWidget

from app.review.events import Event

LABEL_COLOURS = {"polyp": QColor(0, 200, 90), "false alarm": QColor(230, 40, 40), "unsure": QColor(255, 150, 0),
                 None: QColor(200, 200, 200)}
ABOVE, BELOW, PENDING = QColor(255, 200, 0), QColor(90, 120, 160), QColor(45, 45, 45)
EVENT_BAND = 6   # pixels at the bottom for the events


def column_maxima(scores: np.ndarray, columns: int) -> np.ndarray:
    """The highest score of the frames each of ``columns`` pixel columns covers (NaN where
    none of them is analysed yet)."""
    n = len(scores)
    if n == 0 or columns <= 0:
        return np.full(max(columns, 0), np.nan, np.float32)
    edges = np.linspace(0, n, columns + 1).astype(int)
    out = np.full(columns, np.nan, np.float32)
    for c in range(columns):
        chunk = scores[edges[c]:max(edges[c + 1], edges[c] + 1)]
        if np.isfinite(chunk).any():
            out[c] = np.nanmax(chunk)
    return out


class TimelineStrip(QWidget):
    seek_requested = Signal(int)

    def __init__(self, rows: int = 1) -> None:
        super().__init__()
        self.rows = rows                                   # 2 for A/B: one row per model
        self.length = 0
        self.scores: list[np.ndarray] = [np.zeros(0, np.float32) for _ in range(rows)]
        self.events: list[list[tuple[Event, str | None]]] = [[] for _ in range(rows)]
        self.threshold = 0.25
        self.position = 0
        self._columns: list[np.ndarray | None] = [None] * rows
        self._image: QImage | None = None  # the rows as last painted; only the play head moves per frame
        self.setMinimumHeight(36 * rows)
        self.setMaximumHeight(44 * rows)
        self.setCursor(Qt.CursorShape.PointingHandCursor)
        self.setToolTip("best score of each frame (yellow: above the threshold); click to seek; "
                        "events below, coloured by mark")

    def _changed(self) -> None:
        self._image = None
        self.update()

    def set_length(self, frames: int) -> None:
        self.length = max(0, frames)
        self._columns = [None] * self.rows
        self._changed()

    def set_scores(self, scores: np.ndarray, row: int = 0) -> None:
        self.scores[row] = scores
        self._columns[row] = None
        self.length = max(self.length, len(scores))
        self._changed()

    def set_threshold(self, threshold: float) -> None:
        self.threshold = threshold
        self._changed()

    def set_events(self, events: Sequence[Event], labels: Sequence[str | None] | None = None, row: int = 0) -> None:
        self.events[row] = list(zip(events, labels or [None] * len(events)))
        self._changed()

    def set_position(self, frame: int) -> None:
        if frame != self.position:
            self.position = frame
            self.update()

    def frame_at(self, x: float) -> int:
        if self.length <= 0:
            return 0
        return int(np.clip(x / max(1, self.width()) * self.length, 0, self.length - 1))

    def x_of(self, frame: float) -> float:
        return frame / max(1, self.length) * self.width()

    def resizeEvent(self, event) -> None:  # noqa: N802 - Qt's name
        self._columns = [None] * self.rows
        self._image = None
        super().resizeEvent(event)

    def mousePressEvent(self, event) -> None:  # noqa: N802 - Qt's name
        if event.button() == Qt.MouseButton.LeftButton and self.length:
            self.seek_requested.emit(self.frame_at(event.position().x()))

    def paintEvent(self, event) -> None:  # noqa: N802 - Qt's name
        ratio = self.devicePixelRatioF()
        if self._image is None or self._image.size() != self.size() * ratio:
            self._image = QImage(self.size() * ratio, QImage.Format.Format_RGB32)
            self._image.setDevicePixelRatio(ratio)  # sharp on high-DPI screens
            rows = QPainter(self._image)
            rows.fillRect(QRectF(0, 0, self.width(), self.height()), QColor(18, 18, 18))
            row_h = self.height() / self.rows
            for row in range(self.rows):
                self._paint_row(rows, QRectF(0, row * row_h, self.width(), row_h - 1), row)
            rows.end()
        painter = QPainter(self)
        painter.drawImage(0, 0, self._image)
        if self.length:
            x = self.x_of(self.position + 0.5)
            painter.setPen(QPen(QColor(255, 255, 255), 1.5))
            painter.drawLine(QPointF(x, 0), QPointF(x, self.height()))
        painter.end()

    def _paint_row(self, painter: QPainter, area: QRectF, row: int) -> None:
        scores = self.scores[row]
        if self._columns[row] is None:
            padded = np.full(self.length, np.nan, np.float32)
            padded[:min(len(scores), self.length)] = scores[:self.length]
            self._columns[row] = column_maxima(padded, self.width())
        columns = self._columns[row]
        bars = QRectF(area.left(), area.top(), area.width(), area.height() - EVENT_BAND - 1)
        for x, score in enumerate(columns):
            if not np.isfinite(score):
                painter.fillRect(QRectF(x, bars.top(), 1, bars.height()), PENDING)
                continue
            h = bars.height() * float(score)
            painter.fillRect(QRectF(x, bars.bottom() - h, 1, h), ABOVE if score > self.threshold else BELOW)
        y = bars.bottom() - bars.height() * self.threshold
        painter.setPen(QPen(QColor(255, 255, 255, 140), 1, Qt.PenStyle.DashLine))
        painter.drawLine(QPointF(area.left(), y), QPointF(area.right(), y))
        for event, label in self.events[row]:
            x1, x2 = self.x_of(event.start), self.x_of(event.end + 1)
            painter.fillRect(QRectF(x1, area.bottom() - EVENT_BAND, max(2.0, x2 - x1), EVENT_BAND), LABEL_COLOURS[label])
