"""The events panel: one row per event (thumbnail, time, duration, peak score, mark), the
marking buttons with their keys, clip and summary export."""

from __future__ import annotations

from collections.abc import Sequence

from PySide6.QtCore import QSize, Signal
from PySide6.QtGui import QColor, QIcon, QImage, QPixmap
from PySide6.QtWidgets import (
    QCheckBox,
    QGridLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from app.review.events import Event
from app.review.marks import FALSE_ALARM, POLYP, UNSURE

#: (label or None to clear, button text, key)
MARK_BUTTONS = ((POLYP, "Polyp", "1"), (FALSE_ALARM, "False alarm", "2"), (UNSURE, "Unsure", "3"), (None, "Clear", "0"))
ROW_COLOURS = {POLYP: QColor(0, 140, 60), FALSE_ALARM: QColor(170, 30, 30), UNSURE: QColor(190, 110, 0)}


def clock(seconds: float) -> str:
    minutes, rest = divmod(seconds, 60)
    return f"{int(minutes):02d}:{rest:04.1f}"


def describe(k: int, event: Event, label: str | None) -> str:
    return (f"#{k + 1}  {clock(event.start_s)}  ({event.end_s - event.start_s:.1f} s)\n"
            f"peak {event.peak_score:.2f}  {label or 'unmarked'}")


class EventsPanel(QWidget):
    event_activated = Signal(int)       # the user picked an event (click or keys)
    mark_requested = Signal(object)     # a label, or None to clear
    onset_requested = Signal()
    clip_requested = Signal()
    summary_requested = Signal()

    def __init__(self) -> None:
        super().__init__()
        layout = QVBoxLayout(self)
        self.header = QLabel("no recording analysed")
        self.header.setWordWrap(True)
        layout.addWidget(self.header)
        self.list = QListWidget()
        self.list.setIconSize(QSize(96, 72))
        self.list.currentRowChanged.connect(self._on_row)
        layout.addWidget(self.list, 1)
        grid = QGridLayout()
        self.buttons: dict[object, QPushButton] = {}
        for n, (label, text, key) in enumerate(MARK_BUTTONS):
            button = QPushButton(f"{text} ({key})")
            button.clicked.connect(lambda _=False, value=label: self.mark_requested.emit(value))
            grid.addWidget(button, n // 2, n % 2)
            self.buttons[label] = button
        onset = QPushButton("Polyp in view from here (O)")
        onset.setToolTip("for the selected polyp: it comes into view at the current frame "
                         "(time to first detection is measured from here)")
        onset.clicked.connect(self.onset_requested.emit)
        grid.addWidget(onset, 2, 0, 1, 2)
        layout.addLayout(grid)
        self.clip_boxes = QCheckBox("Boxes in exported clips")
        self.clip_boxes.setChecked(True)
        layout.addWidget(self.clip_boxes)
        clip = QPushButton("Export clip (E)")
        clip.clicked.connect(self.clip_requested.emit)
        summary = QPushButton("Export summary")
        summary.clicked.connect(self.summary_requested.emit)
        layout.addWidget(clip)
        layout.addWidget(summary)
        self._events: list[Event] = []
        self._quiet = False

    def set_events(self, events: Sequence[Event], labels: Sequence[str | None]) -> None:
        current = self.list.currentRow()
        self._quiet = True
        self.list.clear()
        self._events = list(events)
        for k, (event, label) in enumerate(zip(events, labels)):
            item = QListWidgetItem(describe(k, event, label))
            if label in ROW_COLOURS:
                item.setForeground(ROW_COLOURS[label])
            self.list.addItem(item)
        if 0 <= current < len(events):
            self.list.setCurrentRow(current)
        self._quiet = False

    def set_label(self, k: int, label: str | None) -> None:
        item = self.list.item(k)
        if item is not None:
            item.setText(describe(k, self._events[k], label))
            item.setForeground(ROW_COLOURS.get(label, self.palette().text().color()))

    def set_thumbnail(self, k: int, image: QImage) -> None:
        item = self.list.item(k)
        if item is not None:
            item.setIcon(QIcon(QPixmap.fromImage(image)))

    def select(self, k: int | None) -> None:
        self._quiet = True
        self.list.setCurrentRow(-1 if k is None else k)
        self._quiet = False

    def _on_row(self, row: int) -> None:
        if not self._quiet and row >= 0:
            self.event_activated.emit(row)

    def item_text(self, k: int) -> str:
        return self.list.item(k).text()

    def count(self) -> int:
        return self.list.count()

    def keys_help(self) -> str:
        return "N / P: next / previous event; 1 polyp, 2 false alarm, 3 unsure, 0 clear; O onset; E export clip"


