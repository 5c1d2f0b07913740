"""A/B: two models on the same recording, to decide whether a new model is better on real
procedures.

Both models analyse the recording in the background, one after the other (the cache
beside the video keeps each pass, so a second comparison starts at once). Then the video
plays with each model's boxes: side by side, or overlaid in two colours (key V). The
labels give each model's inference time measured in its pass, the two-row strip shows
both timelines, and the list diffs the events: those both raised, only A, only B, with
the engineer's marks where the recording has them (marks belong to the recording, so
marks made while reviewing either model count for both).

    polypscope compare procedure.mp4 --model assets/models/default.onnx --model-b runs/new.onnx
"""

from __future__ import annotations

import threading
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
from PySide6.QtCore import QObject, QSettings, Qt, Signal, Slot
from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import (
    QCheckBox,
    QDockWidget,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QMainWindow,
    QProgressBar,
    QToolBar,
    QVBoxLayout,
    QWidget,
)

from app.gui.display.canvas import COLOURS, BoxStyle, VideoCanvas
from app.gui.display.picture import make_picture
from app.gui.review.analysis import AnalysisRunner, floor_for
from app.gui.review.events_panel import clock
from app.gui.review.timeline_strip import TimelineStrip
from app.review.event_diff import EventDiff, diff_events
from app.review.events import Event, find_events, shown_per_frame
from app.review.frames import ReviewFileError
from app.review.marks import MarkStore
from app.review.timeline_cache import Timeline, review_dir
from app.streaming.persistence import PersistenceSettings
from app.streaming.sources import VideoFileSource
from engine.detections import Detections
from engine.postprocess import DEFAULT_CONF

COLOUR_A, COLOUR_B = COLOURS["yellow"], COLOURS["magenta"]


class CachedPlayer(QObject):
    """Plays the video at its own rate with both models' boxes from their timelines (no
    inference while playing). One picture in flight to the GUI, as in the main window."""

    frame_ready = Signal(object, object)   # Picture with A's boxes, Picture with B's boxes
    reached_end = Signal()

    def __init__(self, video: Path, shown_a: list, shown_b: list) -> None:
        super().__init__()
        self.video, self.shown_a, self.shown_b = video, shown_a, shown_b
        self.target_size: tuple[int, int] | None = None
        self.paused = False
        self.index = 0
        self._seek: int | None = None
        self._seek_lock = threading.Lock()
        self.ended = threading.Event()
        self._stop = threading.Event()
        self._painted = threading.Event()
        self._painted.set()
        self._thread = threading.Thread(target=self._run, name="ab-player", daemon=True)

    def start(self) -> CachedPlayer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._painted.set()
        if self._thread.is_alive():
            self._thread.join(5.0)

    def seek(self, index: int) -> None:
        with self._seek_lock:
            self._seek = index
        self.ended.clear()

    def shown(self) -> None:
        self._painted.set()

    def _run(self) -> None:
        source = VideoFileSource(self.video, realtime=True)
        try:
            while not self._stop.is_set():
                with self._seek_lock:
                    seek, self._seek = self._seek, None
                if seek is not None:
                    source.seek(seek)
                elif self.paused:
                    time.sleep(0.02)
                    source.set_speed(source.speed)  # pacing restarts from now on resume
                    continue
                frame = source.read()
                if frame is None:
                    self.paused = True
                    self.ended.set()
                    self.reached_end.emit()
                    continue
                self.index = frame.index
                i = frame.index
                a = self.shown_a[i] if i < len(self.shown_a) else Detections()
                b = self.shown_b[i] if i < len(self.shown_b) else Detections()
                picture = make_picture(frame.image, a, i, frame.captured, self.target_size)
                self._painted.clear()
                self.frame_ready.emit(picture, replace(picture, shown=b))
                while not self._painted.wait(0.1):
                    if self._stop.is_set():
                        return
        finally:
            source.close()


def distinct_names(a: Path, b: Path) -> tuple[str, str]:
    """Names that tell two model files apart: the file names, with as many parent folders
    as it takes when they are the same (``assets/models/default.onnx`` against
    ``runs/new/default.onnx`` reads "models/default.onnx" / "new/default.onnx")."""
    pa, pb = a.resolve().parts, b.resolve().parts
    for depth in range(1, max(len(pa), len(pb)) + 1):
        na, nb = "/".join(pa[-depth:]), "/".join(pb[-depth:])
        if na != nb:
            return na, nb
    return a.name, b.name + " (the same file)"


class CompareWindow(QMainWindow):
    def __init__(self, video: str | Path, model_a: str | Path, model_b: str | Path, *, backend: str = "auto",
                 conf_a: float | None = None, conf_b: float | None = None,
                 persistence: PersistenceSettings | None = None, settings: QSettings | None = None) -> None:
        super().__init__()
        self.video, self.models = Path(video), (Path(model_a), Path(model_b))
        self.names = distinct_names(*self.models)
        self.backend = backend
        self.confs: list[float | None] = [conf_a, conf_b]
        self.persistence = persistence or self._app_persistence(settings)
        self.iou = (settings or QSettings("PolypScope", "PolypScope")).value("iou", 45, int) / 100  # the app's NMS IoU
        self.timelines: list[Timeline | None] = [None, None]
        self.events: list[list[Event]] = [[], []]
        self.diff: EventDiff | None = None
        self.player: CachedPlayer | None = None
        self.frames_shown = 0
        self.last_error: str | None = None
        self.setWindowTitle(f"PolypScope A/B: {self.video.name}")
        try:
            self.marks: MarkStore | None = MarkStore(review_dir(self.video) / "marks.json")
        except ReviewFileError as exc:
            self.marks = None
            self.show_error(str(exc))
        self._build_ui()
        self.runners = [self._runner(0), self._runner(1)]
        self.runners[0].start()  # B starts when A is done: two passes at once would halve each

    @staticmethod
    def _app_persistence(settings: QSettings | None) -> PersistenceSettings:
        """The persistence filter the app is set to (its settings), so the A/B events are
        those the app's review lists for each model."""
        settings = settings or QSettings("PolypScope", "PolypScope")
        n = settings.value("persist_n", 3, int)
        return PersistenceSettings(min(settings.value("persist_k", 2, int), n), n, settings.value("persist_hold", 4, int))

    # -- UI -------------------------------------------------------------------------------
    def _build_ui(self) -> None:
        central = QWidget()
        layout = QVBoxLayout(central)
        views = QHBoxLayout()
        self.canvases, self.labels = [], []
        for k, colour in enumerate((COLOUR_A, COLOUR_B)):
            column = QVBoxLayout()
            label = QLabel(f"{'AB'[k]}: {self.names[k]}")
            label.setWordWrap(True)
            canvas = VideoCanvas()
            canvas.box_style = BoxStyle("box", colour)
            canvas.stale_after_s = float("inf")  # a replay of a recording: nothing here claims to be live
            column.addWidget(label)
            column.addWidget(canvas, 1)
            views.addLayout(column, 1)
            self.canvases.append(canvas)
            self.labels.append(label)
        layout.addLayout(views, 1)
        self.strip = TimelineStrip(rows=2)
        self.strip.seek_requested.connect(self.seek)
        self.progress = QProgressBar()
        self.progress.setMaximumHeight(14)
        layout.addWidget(self.strip)
        layout.addWidget(self.progress)
        self.setCentralWidget(central)
        bar = QToolBar("A/B")
        bar.setObjectName("ab")
        self.addToolBar(bar)
        play = QAction("Pause", self)
        play.setShortcut(QKeySequence(Qt.Key.Key_Space))
        play.triggered.connect(self.toggle_pause)
        bar.addAction(play)
        self.play_action = play
        self.overlay_box = QCheckBox("Overlay in one view (V)")
        self.overlay_box.toggled.connect(self.set_overlaid)
        bar.addWidget(self.overlay_box)
        overlay_key = QAction("overlay", self)
        overlay_key.setShortcut(QKeySequence(Qt.Key.Key_V))
        overlay_key.triggered.connect(self.overlay_box.toggle)
        self.addAction(overlay_key)
        dock = QDockWidget("Event diff", self)
        dock.setObjectName("diff")
        panel = QWidget()
        column = QVBoxLayout(panel)
        self.diff_header = QLabel("analysing …")
        self.diff_header.setWordWrap(True)
        self.diff_list = QListWidget()
        self.diff_list.itemActivated.connect(self._on_diff_item)
        self.diff_list.itemClicked.connect(self._on_diff_item)
        column.addWidget(self.diff_header)
        column.addWidget(self.diff_list, 1)
        panel.setMinimumWidth(320)
        dock.setWidget(panel)
        self.addDockWidget(Qt.DockWidgetArea.RightDockWidgetArea, dock)

    def _runner(self, k: int) -> AnalysisRunner:
        floor = floor_for(self.confs[k]) if self.confs[k] is not None else None  # None: from the model's threshold
        runner = AnalysisRunner(self.video, self.models[k], backend=self.backend, floor=floor, iou=self.iou)
        runner.progress.connect(lambda done, total, k=k: self._on_progress(k, done, total),
                                Qt.ConnectionType.QueuedConnection)
        runner.finished.connect(lambda timeline, k=k: self._on_finished(k, timeline), Qt.ConnectionType.QueuedConnection)
        runner.failed.connect(lambda message, k=k: self._on_failed(k, message), Qt.ConnectionType.QueuedConnection)
        return runner

    def _on_failed(self, k: int, message: str) -> None:
        self.show_error(message)
        self.diff_header.setText(f"{'AB'[k]} could not analyse the recording: {message}")
        if k == 0:
            self.runners[1].start()  # B's pass is still worth having (and cached)

    def show_error(self, message: str) -> None:
        self.last_error = message
        self.statusBar().showMessage(f"Error: {message}")

    # -- passes ---------------------------------------------------------------------------
    def _on_progress(self, k: int, done: int, total) -> None:
        self.strip.set_scores(self.runners[k].scores.copy(), row=k)
        if total:
            self.progress.setFormat(f"analysing with {'AB'[k]} ({self.names[k]}): %p%")
            self.progress.setValue(round(100 * done / total))

    def _on_finished(self, k: int, timeline: Timeline) -> None:
        self.timelines[k] = timeline
        if self.confs[k] is None:
            self.confs[k] = self.runners[k].model_threshold or DEFAULT_CONF
        ms = timeline.inference_ms()
        timing = f"inference p50 {np.percentile(ms, 50):.1f} ms, p99 {np.percentile(ms, 99):.1f} ms" if len(ms) else \
            "inference time not recorded"
        self.labels[k].setText(f"{'AB'[k]}: {self.names[k]}, threshold {self.confs[k]:.2f}\n{timing} "
                               f"({timeline.header.get('backend', '')}, measured in its pass)")
        self.strip.set_length(timeline.frame_count)
        self.strip.set_scores(timeline.best_scores(), row=k)
        if k == 0:
            self.runners[1].start()
        if all(t is not None for t in self.timelines):
            self.progress.hide()
            self._compare()

    def _compare(self) -> None:
        shown = []
        for k, timeline in enumerate(self.timelines):
            if [f.index for f in timeline.frames] != list(range(len(timeline.frames))):
                self.show_error(f"{self.names[k]}: its timeline of {self.video.name} skips frames; "
                                "delete the cache beside the video to analyse it again")
                return
            shown.append(shown_per_frame(timeline.frames, self.confs[k], self.persistence))
            self.events[k] = find_events(timeline.frames, self.confs[k], self.persistence, timeline.fps)
            self.strip.set_events(self.events[k], self._labels(self.events[k]), row=k)
        self.diff = diff_events(*self.events)
        self._fill_diff()
        self.player = CachedPlayer(self.video, *shown)
        self.player.frame_ready.connect(self._on_frame, Qt.ConnectionType.QueuedConnection)
        self.player.reached_end.connect(lambda: self.play_action.setText("Play"), Qt.ConnectionType.QueuedConnection)
        self.player.target_size = self.canvases[0].target_size()
        self.player.start()

    def _labels(self, events: list[Event]) -> list[str | None]:
        return [self.marks.label_of(e) if self.marks else None for e in events]

    def _fill_diff(self) -> None:
        diff = self.diff
        self.diff_list.clear()
        rows = [(a.start, f"both   {clock(a.start_s)}  A peak {a.peak_score:.2f} / B peak {b.peak_score:.2f}", a)
                for a, b in diff.matched]
        rows += [(e.start, f"only A {clock(e.start_s)}  {e.end_s - e.start_s:.1f} s  peak {e.peak_score:.2f}", e)
                 for e in diff.only_a]
        rows += [(e.start, f"only B {clock(e.start_s)}  {e.end_s - e.start_s:.1f} s  peak {e.peak_score:.2f}", e)
                 for e in diff.only_b]
        for start, text, event in sorted(rows, key=lambda r: r[0]):
            label = self.marks.label_of(event) if self.marks else None
            item = QListWidgetItem(text + (f"  [{label}]" if label else ""))
            item.setData(Qt.ItemDataRole.UserRole, start)
            self.diff_list.addItem(item)
        marked = ""
        if self.marks and self.marks.marks:
            fa = [sum(label == "false alarm" for label in self._labels(ev)) for ev in self.events]
            marked = f"; marked false alarms A {fa[0]}, B {fa[1]}"
        self.diff_header.setText(f"A {len(self.events[0])} events, B {len(self.events[1])}: {len(diff.matched)} both, "
                                 f"{len(diff.only_a)} only A, {len(diff.only_b)} only B{marked}")

    # -- playback -------------------------------------------------------------------------
    @Slot(object, object)
    def _on_frame(self, picture_a, picture_b) -> None:
        if self.player is None:
            return
        try:
            if self.overlay_box.isChecked():
                self.canvases[0].extra = [(picture_b.shown, COLOUR_B)]
            else:
                self.canvases[0].extra = []
                self.canvases[1].set_picture(picture_b)
            self.canvases[0].set_picture(picture_a)
            for canvas in self.canvases:
                canvas.repaint()
        finally:
            self.player.shown()
        self.player.target_size = self.canvases[0].target_size()
        self.frames_shown += 1
        self.strip.set_position(picture_a.index)

    def set_overlaid(self, on: bool) -> None:
        self.canvases[1].setVisible(not on)
        self.labels[1].setVisible(not on)
        if not on:
            self.canvases[0].extra = []

    def toggle_pause(self) -> None:
        if self.player is not None:
            if self.player.ended.is_set():  # at the end: play again from the start
                self.player.seek(0)
            self.player.paused = not self.player.paused
            self.play_action.setText("Play" if self.player.paused else "Pause")

    def seek(self, index: int) -> None:
        if self.player is not None:
            self.player.seek(index)

    def _on_diff_item(self, item: QListWidgetItem) -> None:
        self.seek(int(item.data(Qt.ItemDataRole.UserRole)))

    def closeEvent(self, event) -> None:  # noqa: N802 - Qt's name
        for runner in self.runners:
            runner.stop()
        if self.player is not None:
            self.player.stop()
        super().closeEvent(event)
