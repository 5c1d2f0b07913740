"""PolypScope's main window: live or recorded endoscopy video with polyp boxes and a HUD.

Two views of one window. The engineer's view has the toolbar, the detection settings, and
for a recorded video the review: the detection timeline under the seek bar and the events
panel (:mod:`app.gui.review`). The clinical view (key C, or ``polypscope app --clinical``)
is full screen with only the video, the boxes and a small status line, and a red banner
whenever the picture on screen is not fresh.

The GUI thread only paints pictures the stream worker hands over, and reacts to the
user; capture, inference and scaling run on worker threads. Models load on a background
thread too (loading includes warm-up inference). Errors land in the status bar; nothing
freezes the window.
"""

from __future__ import annotations

import threading
import time
from dataclasses import replace
from datetime import datetime
from pathlib import Path

import cv2
from PySide6.QtCore import QSettings, Qt, QTimer, Signal, Slot
from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import (
    QApplication,
    QCheckBox,
    QComboBox,
    QDockWidget,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QInputDialog,
    QLabel,
    QMainWindow,
    QPushButton,
    QSlider,
    QSpinBox,
    QToolBar,
    QVBoxLayout,
    QWidget,
)

from app.cpu_budget import CpuBudget, app_budget, apply_opencv_threads
from app.gui.display.canvas import BOX_SHAPES, COLOURS, DEFAULT_STALE_AFTER_S, BoxStyle, VideoCanvas
from app.gui.display.picture import Picture
from app.gui.review.controller import ReviewController
from app.gui.threshold_memory import ThresholdMemory, threshold_key
from app.gui.worker import StreamWorker
from app.streaming.alerts import DEFAULT_MIN_INTERVAL_S, AlertLimiter
from app.streaming.persistence import PersistenceFilter, PersistenceSettings
from app.streaming.pipeline import Result, StreamPipeline
from app.streaming.recorder import DetectionLog, RecorderError, VideoRecorder
from app.streaming.sources import SourceError, VideoFileSource, list_cameras, open_source
from engine.detector import BACKENDS, Detector
from engine.postprocess import DEFAULT_CONF

SPEEDS = (0.25, 0.5, 1.0, 1.5, 2.0, 4.0)
ORGANISATION, APPLICATION = "PolypScope", "PolypScope"
STALE_CHECK_MS = 100
#: Detection rate cap on live feeds (see :mod:`app.streaming.pipeline`): 25 and 30 fps feeds
#: are detected on every frame, 50/60 fps ones on every other frame, all frames shown.
DEFAULT_MAX_DETECTION_HZ = 30


class MainWindow(QMainWindow):
    model_ready = Signal(object)
    model_failed = Signal(str)
    #: Messages from worker threads (a live source reconnecting); queued to the GUI thread,
    #: since widgets may only be touched there.
    source_status = Signal(str)

    def __init__(self, source: str | None = None, model: str | None = None, *, settings: QSettings | None = None,
                 backend: str | None = None, realtime: bool = True, cpu_budget: CpuBudget | None = None,
                 clinical: bool = False, review: bool | None = None) -> None:
        """``realtime=False`` plays files and folders as fast as the detector and the window
        go, every frame shown (soak tests, quick reviews); live sources are live either way.
        ``cpu_budget`` splits the cores between inference and the rest (default
        :func:`app.cpu_budget.app_budget`). ``clinical`` starts in the full-screen clinical
        view; ``review`` overrides the setting that analyses each opened video file."""
        super().__init__()
        self.realtime = realtime
        self.cpu_budget = cpu_budget or app_budget()
        apply_opencv_threads(self.cpu_budget)
        self.setWindowTitle("PolypScope")
        self.settings = settings or QSettings(ORGANISATION, APPLICATION)
        self.thresholds = ThresholdMemory(self.settings)
        self._threshold_key = ""  # the loaded model's (threshold_memory.threshold_key)
        self.detector: Detector | None = None
        self.worker: StreamWorker | None = None
        self.source = None
        self.source_spec: str | None = None
        self.frames_shown = 0
        self.last_result: Result | None = None
        self.last_shown = None  # the boxes on screen (the timeline's while reviewing)
        self.last_error: str | None = None
        self._recording: tuple[VideoRecorder, DetectionLog] | None = None
        self.alerts = AlertLimiter(self.settings.value("alert_interval_s", DEFAULT_MIN_INTERVAL_S, float))
        self.alerts_sounded = 0
        self.review_on_open = self.settings.value("review", True, bool) if review is None else review
        self._build_ui()
        self.stale_timer = QTimer(self)
        self.stale_timer.setInterval(STALE_CHECK_MS)
        self.stale_timer.timeout.connect(self._check_stale)
        self.stale_timer.start()
        self._iou_timer = QTimer(self)
        self._iou_timer.setSingleShot(True)
        self._iou_timer.setInterval(400)
        self._iou_timer.timeout.connect(self._start_review)
        self.model_ready.connect(self._on_model_ready)
        self.model_failed.connect(self._on_model_failed)
        self.source_status.connect(self.statusBar().showMessage)
        if backend:
            self.backend_box.setCurrentText(backend)
        model = model or self.settings.value("model", "", str) or None
        if source:
            self.source_spec = source
        if model:
            self.load_model(model)
        elif source:
            self.show_error("choose a model first (Model > Open model…)")
        if clinical:
            self.set_clinical(True)

    # -- UI ---------------------------------------------------------------------------
    def _build_ui(self) -> None:
        self.view = VideoCanvas()
        self.review = ReviewController(self)
        central = QWidget()
        layout = QVBoxLayout(central)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(2)
        layout.addWidget(self.view, 1)
        self.seek_slider = QSlider(Qt.Orientation.Horizontal)
        self.seek_slider.setEnabled(False)
        self.seek_slider.sliderReleased.connect(lambda: self.seek(self.seek_slider.value()))
        self.below_video = [self.seek_slider, self.review.strip, self.review.progress]
        for widget in self.below_video:
            layout.addWidget(widget)
        self.setCentralWidget(central)
        bar = QToolBar("Playback")
        bar.setObjectName("playback")
        self.addToolBar(bar)
        self.actions: dict[str, QAction] = {}
        for key, text, shortcut, slot in (
            ("open", "Open video…", QKeySequence.StandardKey.Open, self._ask_file),
            ("folder", "Open folder…", None, self._ask_folder),
            ("camera", "Camera…", None, self._ask_camera),
            ("url", "Stream URL…", None, self._ask_url),
            ("model", "Model…", None, self._ask_model),
            ("play", "Pause", Qt.Key.Key_Space, self.toggle_pause),
            ("back", "Step back", Qt.Key.Key_Left, lambda: self.step(-1)),
            ("step", "Step", Qt.Key.Key_Right, lambda: self.step(1)),
            ("snapshot", "Snapshot", Qt.Key.Key_S, self.snapshot),
            ("record", "Record", Qt.Key.Key_R, self.toggle_recording),
            ("fullscreen", "Full screen", Qt.Key.Key_F, self.toggle_full_screen),
            ("clinical", "Clinical view", Qt.Key.Key_C, self.toggle_clinical),
        ):
            action = QAction(text, self)
            if shortcut is not None:
                action.setShortcut(QKeySequence(shortcut))
            action.triggered.connect(slot)
            bar.addAction(action)
            self.addAction(action)  # its key works while the toolbar is hidden (clinical view)
            self.actions[key] = action
        self.toolbar = bar
        leave = QAction("Leave full screen", self)
        leave.setShortcut(QKeySequence(Qt.Key.Key_Escape))
        leave.triggered.connect(self.leave_full_screen)
        self.addAction(leave)
        self.speed_box = QComboBox()
        self.speed_box.addItems([f"{s:g}x" for s in SPEEDS])
        self.speed_box.setCurrentText(self.settings.value("speed", "1x", str))
        self.speed_box.currentTextChanged.connect(self._on_speed)
        bar.addWidget(self.speed_box)
        self._build_settings_dock()
        self.events_dock = QDockWidget("Events", self)
        self.events_dock.setObjectName("events")
        self.events_dock.setWidget(self.review.panel)
        self.addDockWidget(Qt.DockWidgetArea.RightDockWidgetArea, self.events_dock)
        self.hud_label = QLabel("no stream")
        self.statusBar().addPermanentWidget(self.hud_label)

    def _build_settings_dock(self) -> None:
        dock = QDockWidget("Detection", self)
        dock.setObjectName("detection")
        panel = QWidget()
        form = QFormLayout(panel)
        self.backend_box = QComboBox()
        self.backend_box.addItems(list(BACKENDS))
        self.backend_box.setCurrentText(self.settings.value("backend", "auto", str))
        self.backend_box.currentTextChanged.connect(self._on_backend)
        form.addRow("Backend", self.backend_box)
        self.conf_slider = self._slider(round(DEFAULT_CONF * 100), self._on_conf)  # set by each model on load
        self.iou_slider = self._slider(self.settings.value("iou", 45, int), self._on_iou)
        form.addRow("Confidence", self.conf_slider)
        self.conf_source = QLabel("")  # whose threshold is in use: the model's, or the user's for this model
        self.conf_reset = QPushButton("Use the model's threshold")
        self.conf_reset.setToolTip("Forget the threshold chosen for this model and use the operating threshold "
                                   "it was validated at (written into the model at export)")
        self.conf_reset.clicked.connect(self._on_conf_reset)
        self.conf_slider.setEnabled(False)  # a threshold belongs to a model: none is loaded yet
        self.conf_reset.setEnabled(False)
        form.addRow("", self.conf_source)
        form.addRow("", self.conf_reset)
        form.addRow("NMS IoU", self.iou_slider)
        self.persist_k = self._spin(self.settings.value("persist_k", 2, int), 1, 10)
        self.persist_n = self._spin(self.settings.value("persist_n", 3, int), 1, 10)
        self.persist_hold = self._spin(self.settings.value("persist_hold", 4, int), 0, 30)
        form.addRow("Show after k hits", self.persist_k)
        form.addRow("… of the last n frames", self.persist_n)
        form.addRow("Hold for frames", self.persist_hold)
        self.overlay_box = QCheckBox("Draw overlay")
        self.overlay_box.setChecked(True)
        self.overlay_box.toggled.connect(self._on_overlay)
        self.sound_box = QCheckBox("Sound on new polyp")
        self.sound_box.setChecked(self.settings.value("sound", False, bool))
        self.sound_box.toggled.connect(lambda on: self.settings.setValue("sound", on))
        form.addRow(self.overlay_box)
        form.addRow(self.sound_box)
        self.alert_interval = QDoubleSpinBox()
        self.alert_interval.setRange(0.0, 60.0)
        self.alert_interval.setSuffix(" s")
        self.alert_interval.setValue(self.alerts.min_interval_s)
        self.alert_interval.valueChanged.connect(self._on_alert_interval)
        form.addRow("… at most every", self.alert_interval)
        self.shape_box = QComboBox()
        self.shape_box.addItems(list(BOX_SHAPES))
        self.shape_box.setCurrentText(self.settings.value("box_shape", "corners", str))
        self.colour_box = QComboBox()
        self.colour_box.addItems(list(COLOURS))
        self.colour_box.setCurrentText(self.settings.value("box_colour", "yellow", str))
        self.thickness_box = QSpinBox()
        self.thickness_box.setRange(1, 8)
        self.thickness_box.setValue(self.settings.value("box_thickness", 2, int))
        for widget, label in ((self.shape_box, "Box style"), (self.colour_box, "Box colour"),
                              (self.thickness_box, "Line thickness")):
            form.addRow(label, widget)
        self.shape_box.currentTextChanged.connect(self._on_box_style)
        self.colour_box.currentTextChanged.connect(self._on_box_style)
        self.thickness_box.valueChanged.connect(self._on_box_style)
        self.detection_rate = QSpinBox()
        self.detection_rate.setRange(0, 120)
        self.detection_rate.setSuffix(" /s")
        self.detection_rate.setSpecialValueText("every frame")
        self.detection_rate.setValue(self.settings.value("max_detection_hz", DEFAULT_MAX_DETECTION_HZ, int))
        self.detection_rate.setToolTip("on a faster live feed (50/60 fps) the model runs this often and every frame "
                                       "is shown with the latest boxes, instead of frames being dropped")
        self.detection_rate.valueChanged.connect(self._on_detection_rate)
        form.addRow("Detect at most", self.detection_rate)
        self.stale_box = QSpinBox()
        self.stale_box.setRange(100, 5000)
        self.stale_box.setSingleStep(100)
        self.stale_box.setSuffix(" ms")
        self.stale_box.setValue(self.settings.value("stale_ms", round(DEFAULT_STALE_AFTER_S * 1000), int))
        self.stale_box.setToolTip("a red banner shows when the picture on screen is older than this")
        self.stale_box.valueChanged.connect(self._on_stale)
        form.addRow("Not-live warning after", self.stale_box)
        self.review_box = QCheckBox("Analyse video files when opened")
        self.review_box.setChecked(self.review_on_open)
        self.review_box.toggled.connect(self._on_review_box)
        form.addRow(self.review_box)
        self._on_box_style()
        self._on_stale(self.stale_box.value())
        dock.setWidget(panel)
        self.settings_dock = dock
        self.addDockWidget(Qt.DockWidgetArea.RightDockWidgetArea, dock)

    def _slider(self, value: int, slot) -> QSlider:
        s = QSlider(Qt.Orientation.Horizontal)
        s.setRange(1, 99)
        s.setValue(value)
        s.valueChanged.connect(slot)
        return s

    def _spin(self, value: int, low: int, high: int) -> QSpinBox:
        s = QSpinBox()
        s.setRange(low, high)
        s.setValue(value)
        s.valueChanged.connect(self._on_persistence)
        return s

    # -- models and sources ---------------------------------------------------------------
    def load_model(self, path: str) -> None:
        """Load on a background thread (it runs warm-up inference), then (re)start."""
        self.statusBar().showMessage(f"loading {Path(path).name} …")
        backend = self.backend_box.currentText()
        iou = self.iou_slider.value() / 100

        def load() -> None:
            try:
                key = threshold_key(path)  # hashes the file: off the GUI thread, once per load
                detector = Detector(path, backend, iou=iou, threads=self.cpu_budget.inference_threads,
                                    spin=self.cpu_budget.spin)
                self.model_ready.emit((detector, key))
            except Exception as exc:  # any failure is shown, not raised into Qt
                self.model_failed.emit(f"cannot load model {path}: {exc}")

        threading.Thread(target=load, name="model-loader", daemon=True).start()

    @Slot(object)
    def _on_model_ready(self, loaded: tuple[Detector, str]) -> None:
        detector, self._threshold_key = loaded
        # A threshold the user chose for THIS model replaces its operating point (read now, not
        # when loading began: the slider may have moved during a reload).
        chosen = self.thresholds.chosen(self._threshold_key)
        if chosen is not None:
            detector.conf = chosen
        old, self.detector = self.detector, detector
        self.settings.setValue("model", str(detector.model_path))
        self._show_threshold()
        merging = "" if detector.merge_iou is None else f", box merging IoU > {detector.merge_iou:g}"
        self.statusBar().showMessage(f"model {detector.model_path.name} on {_runs_on(detector)}, "
                                     f"threshold {detector.conf:.2f}{merging}", 5000)
        if self.worker is not None:
            self.worker.pipeline.set_detector(detector)
            self.worker.backend = _runs_on(detector)
            self._start_review()
        elif self.source_spec:
            self.open(self.source_spec)
        if old is not None:
            old.close()

    @Slot(str)
    def _on_model_failed(self, message: str) -> None:
        self.show_error(message)

    def open(self, spec: str) -> bool:
        """Open a file, folder, camera or URL and start streaming it."""
        self.source_spec = spec
        if self.detector is None:
            self.show_error("choose a model first (Model…)")
            return False
        self.stop_stream()
        try:
            self.source = open_source(spec, realtime=self.realtime, on_status=self.source_status.emit)
        except (SourceError, OSError) as exc:
            self.show_error(str(exc))
            return False
        self._on_speed(self.speed_box.currentText())
        info = self.source.info
        self.seek_slider.setEnabled(not info.live and bool(info.frame_count))
        self.seek_slider.setRange(0, max(0, (info.frame_count or 1) - 1))
        self.view.warm_up((info.width, info.height))
        lossless = not (self.realtime or info.live)
        pipeline = StreamPipeline(self.source, self.detector, lossless=lossless, persistence=self._persistence(),
                                  max_detection_hz=self.detection_rate.value() or None)
        self.worker = StreamWorker(pipeline, self.detector.info.class_names, _runs_on(self.detector),
                                   self.view.box_style.overlay_style())
        self.worker.target_size = self.view.target_size()
        self.worker.show_overlay = self.overlay_box.isChecked()
        self.worker.frame_ready.connect(self._on_frame, Qt.ConnectionType.QueuedConnection)
        self.worker.failed.connect(self.show_error, Qt.ConnectionType.QueuedConnection)
        self._start_when_shown(self.worker)
        self.actions["play"].setText("Pause")
        self.setWindowTitle(f"PolypScope — {info.description}")
        self._start_review()
        return True

    def _start_when_shown(self, worker: StreamWorker, tries: int = 50) -> None:
        """Start the stream once the window has really painted (two paint events: a window
        just mapped, or just made full screen, gets its first ones a little later and they
        are slow), or after a second at most: the first frames of a 60 fps feed must not
        wait on them."""
        if worker is not self.worker:
            return  # replaced meanwhile
        if self.view.paints >= 2 or tries <= 0 or not self.isVisible():
            worker.target_size = self.view.target_size()  # the window's size now (full screen applied)
            worker.start()
            return
        self.view.update()
        QTimer.singleShot(20, lambda: self._start_when_shown(worker, tries - 1))

    def _start_review(self) -> None:
        """Analyse a video file in the background for the timeline and events (not in the
        clinical view: there the cores belong to the live picture)."""
        if (isinstance(self.source, VideoFileSource) and self.review_on_open and self.detector is not None
                and not self.clinical):
            self.review.open(self.source.path, self.detector)
        else:
            self.review.close()
        for widget in (self.review.strip, self.events_dock):
            widget.setVisible(self.review.video is not None and not self.clinical)

    def stop_stream(self) -> None:
        self.review.close()
        self.stop_recording()
        if self.worker is not None:
            self.worker.stop()
            self.worker = None
        if self.source is not None:
            self.source.close()
            self.source = None

    def persistence_settings(self) -> PersistenceSettings:
        k, n = self.persist_k.value(), self.persist_n.value()
        return PersistenceSettings(min(k, n), n, self.persist_hold.value())

    def _persistence(self) -> PersistenceFilter | None:
        return PersistenceFilter(self.persistence_settings())

    # -- frames -----------------------------------------------------------------------
    @Slot(object, object, object)
    def _on_frame(self, picture: Picture, result: Result, snap) -> None:
        worker = self.worker
        if worker is None or self.sender() is not worker:
            return  # queued by a stream that has since been closed or replaced
        reviewed = self.review.shown_at(result.frame.index)
        if reviewed is not None:
            picture = replace(picture, shown=reviewed)
        try:
            self.view.set_picture(picture)
            self.view.repaint()
        finally:
            worker.mark_shown(result)  # the worker sends the next picture only after this
        worker.target_size = self.view.target_size()
        self.frames_shown += 1
        self.last_result, self.last_shown = result, picture.shown  # what is on screen now
        if self._recording is not None and self.worker is not None:
            self._record(result, picture.shown)
        if not self.seek_slider.isSliderDown():
            self.seek_slider.setValue(result.frame.index)
        self.review.strip.set_position(result.frame.index)
        self.review.follow(result.frame.index)
        if self.alerts.update(len(picture.shown) > 0, time.monotonic()) and self.sound_box.isChecked():
            self.alerts_sounded += 1
            QApplication.beep()
        self.view.status_text = (f"{self.detector.model_path.name if self.detector else ''} · "
                                 f"{snap.display_fps:.0f} fps · latency {snap.latency_p50_ms:.0f} ms")
        self.hud_label.setText(f"capture {snap.capture_fps:.1f} fps · inference {snap.inference_fps:.1f} fps · "
                               f"display {snap.display_fps:.1f} fps · latency p50 {snap.latency_p50_ms:.0f} ms · "
                               f"dropped {snap.dropped}")

    def _check_stale(self) -> None:
        """The age of the picture on screen, for the not-live banner (every 100 ms). A
        recording that has played to its end is not a stalled feed; a live source that has
        stopped is."""
        picture = self.view.picture
        paused = self.worker is not None and self.worker.pipeline.paused
        ended = (self.worker is not None and not self.worker.running and self.source is not None
                 and not self.source.info.live)
        if (paused, ended) != (self.view.paused, self.view.ended):
            self.view.paused, self.view.ended = paused, ended
            self.view.update()
        if picture is not None:
            self.view.set_age(time.perf_counter() - picture.captured)

    def _record(self, result: Result, shown) -> None:
        """Append the frame, with the boxes on screen, to the recording; a failed write (disk
        full) stops the recording with what it kept, and playback goes on."""
        video, log = self._recording
        try:
            video.write(self.worker.annotate(result.frame.image, shown))
            log.write(result.frame.index, result.frame.position_ms, result.detections, result.frame.name,
                      result.inferred)
        except RecorderError as exc:
            self.stop_recording()
            self.show_error(f"recording stopped: {exc}")

    # -- controls -----------------------------------------------------------------------
    def toggle_pause(self) -> None:
        if self.worker is None:
            return
        paused = not self.worker.pipeline.paused
        self.worker.pipeline.pause(paused)
        self.actions["play"].setText("Play" if paused else "Pause")

    def step(self, frames: int) -> None:
        if self.worker is None or self.source is None or self.source.info.live:
            return
        if not self.worker.pipeline.paused:
            self.toggle_pause()
        if frames > 0:
            self.worker.pipeline.step(frames)
        elif self.last_result is not None:
            self.seek(max(0, self.last_result.frame.index + frames))

    def seek(self, index: int) -> None:
        if self.worker is None or self.source is None or self.source.info.live:
            return
        self.worker.pipeline.seek(index)
        if self.worker.pipeline.paused:
            self.worker.pipeline.step(1)

    def snapshot(self) -> list[Path]:
        """Save the current frame as PNG, with and without the overlay."""
        if self.worker is None or self.last_result is None:
            self.show_error("nothing to snapshot yet")
            return []
        raw = self.last_result.frame.image  # the frame on screen, with the boxes on screen
        folder = Path(self.settings.value("snapshot_dir", str(Path.cwd() / "snapshots"), str))
        folder.mkdir(parents=True, exist_ok=True)
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S-%f")
        paths = [folder / f"{stamp}-raw.png", folder / f"{stamp}-overlay.png"]
        cv2.imwrite(str(paths[0]), raw)
        cv2.imwrite(str(paths[1]), self.worker.annotate(raw, self.last_shown))
        self.statusBar().showMessage(f"saved {paths[1].name} and {paths[0].name} in {folder}", 5000)
        return paths

    def toggle_recording(self) -> None:
        if self._recording is not None:
            self.stop_recording()
        else:
            self.start_recording()

    def start_recording(self) -> Path | None:
        if self.source is None:
            self.show_error("nothing to record: open a video, camera or stream first")
            return None
        folder = Path(self.settings.value("record_dir", str(Path.cwd() / "recordings"), str))
        run = folder / datetime.now().strftime("%Y%m%d-%H%M%S")
        info = self.source.info
        self._recording = (VideoRecorder(run / "annotated.avi", info.fps, (info.width, info.height)),
                           DetectionLog(run / "detections.jsonl"))
        self.actions["record"].setText("Stop recording")
        self.statusBar().showMessage(f"recording to {run}")
        return run

    def stop_recording(self) -> None:
        if self._recording is None:
            return
        video, log = self._recording
        self._recording = None
        video.close()
        log.close()
        self.actions["record"].setText("Record")
        self.statusBar().showMessage(f"recording saved: {video.path.parent}", 5000)

    def toggle_full_screen(self) -> None:
        self.showNormal() if self.isFullScreen() else self.showFullScreen()

    def leave_full_screen(self) -> None:
        if self.clinical:
            self.set_clinical(False)
        self.showNormal()

    @property
    def clinical(self) -> bool:
        return self.view.clinical

    def toggle_clinical(self) -> None:
        self.set_clinical(not self.clinical)

    def set_clinical(self, on: bool) -> None:
        """The clinical view: full screen, only the video, the boxes and a status line."""
        was, self.view.clinical = self.view.clinical, on
        if was != on and self.worker is not None and (on or self.review.video is None):
            self._start_review()  # stops the pass in the clinical view, starts it when leaving
        for widget in (self.toolbar, self.settings_dock, self.statusBar(), self.seek_slider):
            widget.setVisible(not on)
        reviewing = self.review.video is not None
        self.review.strip.setVisible(reviewing and not on)
        self.events_dock.setVisible(reviewing and not on)
        self.review.progress.setVisible(self.review.analysing and not on)
        if on:
            if not self.isFullScreen():
                self._normal_geometry = self.geometry()
            # Full screen is a request to the window manager; on a bare X server (a kiosk,
            # Xvfb) there is none, so the window also takes the screen's geometry itself.
            self.setGeometry(self.screen().geometry())
            self.showFullScreen()
        else:
            self.showNormal()
            if getattr(self, "_normal_geometry", None) is not None:
                self.setGeometry(self._normal_geometry)
        self.view.update()

    def show_error(self, message: str) -> None:
        self.last_error = message
        self.statusBar().showMessage(f"Error: {message}")

    # -- settings ---------------------------------------------------------------------
    def _on_conf(self) -> None:
        """The user chose a threshold: it replaces this model's operating threshold, now and
        next time this model is loaded (``threshold_memory``: no other model's)."""
        if self.detector is None:
            return  # no model to choose it for; the next one shows its own
        self.detector.conf = self.conf_slider.value() / 100
        self.thresholds.choose(self._threshold_key, self.conf_slider.value())
        self._show_threshold()
        self.review.schedule_refresh()

    def _on_conf_reset(self) -> None:
        """Back to the model's own operating threshold, and forget the choice."""
        if self.detector is None:
            return
        self.thresholds.forget(self._threshold_key)
        self.detector.conf = self.detector.model_conf
        self._show_threshold()
        self.review.schedule_refresh()

    def _show_threshold(self) -> None:
        """The slider shows the threshold in use (without saving it as a choice), and the
        label says whose it is."""
        detector = self.detector
        if detector is None:
            return
        self.conf_slider.blockSignals(True)
        self.conf_slider.setValue(round(detector.conf * 100))
        self.conf_slider.blockSignals(False)
        own = detector.info.operating_threshold
        chosen = self.thresholds.chosen(self._threshold_key) is not None
        if chosen:
            text = f"{detector.conf:.2f}: your choice for this model" + (f" (its own: {own:.3f})" if own else "")
        elif own:
            text = f"{detector.conf:.3f}: the model's operating threshold (chosen on val)"
        else:
            text = f"{detector.conf:.2f}: generic default (the model carries no operating threshold)"
        self.conf_source.setText(text)
        self.conf_slider.setEnabled(True)
        self.conf_reset.setEnabled(chosen)

    def _on_iou(self) -> None:
        if self.detector is not None:
            self.detector.iou = self.iou_slider.value() / 100
        self.settings.setValue("iou", self.iou_slider.value())
        if self.review.video is not None:  # the NMS IoU is part of the timeline's key: another pass (or cache)
            self._iou_timer.start()       # once the slider stops

    def _on_persistence(self) -> None:
        for key, box in (("persist_k", self.persist_k), ("persist_n", self.persist_n), ("persist_hold", self.persist_hold)):
            self.settings.setValue(key, box.value())
        if self.worker is not None:
            self.worker.pipeline.persistence = self._persistence()
        self.review.schedule_refresh()

    def _on_box_style(self, *_) -> None:
        style = BoxStyle(self.shape_box.currentText(), COLOURS[self.colour_box.currentText()],
                         float(self.thickness_box.value()))
        self.view.box_style = style
        if self.worker is not None:  # recordings and snapshots draw the boxes the window shows
            self.worker.style = style.overlay_style()
        for key, value in (("box_shape", style.shape), ("box_colour", self.colour_box.currentText()),
                           ("box_thickness", self.thickness_box.value())):
            self.settings.setValue(key, value)
        self.view.update()

    def _on_detection_rate(self, hz: int) -> None:
        self.settings.setValue("max_detection_hz", hz)
        if self.worker is not None:
            self.worker.pipeline.max_detection_hz = hz or None  # also the frame slot's depth

    def _on_stale(self, ms: int) -> None:
        self.view.stale_after_s = ms / 1000
        self.settings.setValue("stale_ms", ms)

    def _on_alert_interval(self, seconds: float) -> None:
        self.alerts.min_interval_s = seconds
        self.settings.setValue("alert_interval_s", seconds)

    def _on_review_box(self, on: bool) -> None:
        self.review_on_open = on
        self.settings.setValue("review", on)
        if self.worker is not None:
            self._start_review()

    def _on_backend(self, name: str) -> None:
        self.settings.setValue("backend", name)
        if self.detector is not None:
            self.load_model(str(self.detector.model_path))

    def _on_speed(self, text: str) -> None:
        self.settings.setValue("speed", text)
        if self.source is not None and hasattr(self.source, "set_speed"):
            self.source.set_speed(float(text.rstrip("x")))

    def _on_overlay(self, on: bool) -> None:
        self.view.overlay = on
        self.view.update()
        if self.worker is not None:
            self.worker.show_overlay = on

    # -- dialogs --------------------------------------------------------------------------
    def _ask_file(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Open video", "", "Videos (*.mp4 *.avi *.mkv *.mov *.m4v *.webm)")
        if path:
            self.open(path)

    def _ask_folder(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Open image folder")
        if path:
            self.open(path)

    def _ask_camera(self) -> None:
        cameras = list_cameras()
        if not cameras:
            self.show_error("no camera found")
            return
        choice, ok = QInputDialog.getItem(self, "Camera", "Capture device", cameras, 0, False)
        if ok:
            self.open(choice)

    def _ask_url(self) -> None:
        url, ok = QInputDialog.getText(self, "Stream", "RTSP or HTTP URL")
        if ok and url:
            self.open(url)

    def _ask_model(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Open model", "", "Models (*.onnx *.engine *.safetensors)")
        if path:
            self.load_model(path)

    def closeEvent(self, event) -> None:  # noqa: N802 - Qt's name
        self.stop_stream()
        if self.detector is not None:
            self.detector.close()
        self.settings.sync()
        super().closeEvent(event)


def wait_until(predicate, timeout: float = 10.0) -> bool:
    """Process Qt events until ``predicate()`` holds (for scripts and tests)."""
    end = time.monotonic() + timeout
    app = QApplication.instance()
    while time.monotonic() < end:
        app.processEvents()
        if predicate():
            return True
        time.sleep(0.005)
    return False


def _runs_on(detector: Detector) -> str:
    """Backend and arithmetic, as the HUD shows them: "onnxruntime-cpu fp32", "tensorrt int8"."""
    return f"{detector.backend_name} {detector.info.precision}"
