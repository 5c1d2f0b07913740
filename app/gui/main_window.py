"""PolypScope's main window: live or recorded endoscopy video with polyp boxes and a HUD.

The GUI thread only paints pictures the stream worker hands over, and reacts to the
user; capture, inference and drawing run on worker threads. Models load on a background
thread too (loading includes warm-up inference). Errors land in the status bar; nothing
freezes the window.
"""

from __future__ import annotations

import threading
import time
from datetime import datetime
from pathlib import Path

import cv2
from PySide6.QtCore import QSettings, Qt, Signal, Slot
from PySide6.QtGui import QAction, QImage, QKeySequence, QPainter
from PySide6.QtWidgets import (
    QApplication,
    QCheckBox,
    QComboBox,
    QDockWidget,
    QFileDialog,
    QFormLayout,
    QInputDialog,
    QLabel,
    QMainWindow,
    QSlider,
    QSpinBox,
    QToolBar,
    QWidget,
)

from app.cpu_budget import CpuBudget, app_budget, apply_opencv_threads
from app.gui.worker import StreamWorker
from app.streaming.persistence import PersistenceFilter, PersistenceSettings
from app.streaming.pipeline import Result, StreamPipeline
from app.streaming.recorder import DetectionLog, RecorderError, VideoRecorder
from app.streaming.sources import SourceError, list_cameras, open_source
from engine.detector import BACKENDS, Detector

SPEEDS = (0.25, 0.5, 1.0, 1.5, 2.0, 4.0)
ORGANISATION, APPLICATION = "PolypScope", "PolypScope"


class VideoView(QWidget):
    """Paints the latest picture, scaled to fit with its aspect ratio kept."""

    def __init__(self) -> None:
        super().__init__()
        self.image: QImage | None = None
        self.setMinimumSize(320, 240)
        self.setAttribute(Qt.WidgetAttribute.WA_OpaquePaintEvent)

    def set_image(self, image: QImage) -> None:
        self.image = image
        self.update()

    def paintEvent(self, event) -> None:  # noqa: N802 - Qt's name
        painter = QPainter(self)
        painter.fillRect(self.rect(), Qt.GlobalColor.black)
        if self.image is not None:
            scaled = self.image.size().scaled(self.size(), Qt.AspectRatioMode.KeepAspectRatio)
            x, y = (self.width() - scaled.width()) // 2, (self.height() - scaled.height()) // 2
            painter.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform)
            painter.drawImage(self.rect().adjusted(x, y, -x, -y), self.image)
        painter.end()


class MainWindow(QMainWindow):
    model_ready = Signal(object)
    model_failed = Signal(str)
    #: Messages from worker threads (a live source reconnecting); queued to the GUI thread,
    #: since widgets may only be touched there.
    source_status = Signal(str)

    def __init__(self, source: str | None = None, model: str | None = None, *, settings: QSettings | None = None,
                 backend: str | None = None, realtime: bool = True, cpu_budget: CpuBudget | None = None) -> None:
        """``realtime=False`` plays files and folders as fast as the detector and the window
        go, every frame shown (soak tests, quick reviews); live sources are live either way.
        ``cpu_budget`` splits the cores between inference and the rest (default
        :func:`app.cpu_budget.app_budget`)."""
        super().__init__()
        self.realtime = realtime
        self.cpu_budget = cpu_budget or app_budget()
        apply_opencv_threads(self.cpu_budget)
        self.setWindowTitle("PolypScope")
        self.settings = settings or QSettings(ORGANISATION, APPLICATION)
        self.detector: Detector | None = None
        self.worker: StreamWorker | None = None
        self.source = None
        self.source_spec: str | None = None
        self.frames_shown = 0
        self.last_result: Result | None = None
        self.last_error: str | None = None
        self._recording: tuple[VideoRecorder, DetectionLog] | None = None
        self._alert_on = False
        self._build_ui()
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

    # -- UI ---------------------------------------------------------------------------
    def _build_ui(self) -> None:
        self.view = VideoView()
        self.setCentralWidget(self.view)
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
        ):
            action = QAction(text, self)
            if shortcut is not None:
                action.setShortcut(QKeySequence(shortcut))
            action.triggered.connect(slot)
            bar.addAction(action)
            self.actions[key] = action
        leave = QAction("Leave full screen", self)
        leave.setShortcut(QKeySequence(Qt.Key.Key_Escape))
        leave.triggered.connect(self.showNormal)
        self.addAction(leave)
        self.seek_slider = QSlider(Qt.Orientation.Horizontal)
        self.seek_slider.setEnabled(False)
        self.seek_slider.sliderReleased.connect(lambda: self.seek(self.seek_slider.value()))
        bar.addWidget(self.seek_slider)
        self.speed_box = QComboBox()
        self.speed_box.addItems([f"{s:g}x" for s in SPEEDS])
        self.speed_box.setCurrentText(self.settings.value("speed", "1x", str))
        self.speed_box.currentTextChanged.connect(self._on_speed)
        bar.addWidget(self.speed_box)
        self._build_settings_dock()
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
        self.conf_slider = self._slider(self.settings.value("conf", 25, int), self._on_conf)
        self.iou_slider = self._slider(self.settings.value("iou", 45, int), self._on_iou)
        form.addRow("Confidence", self.conf_slider)
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
        form.addRow(self.overlay_box)
        form.addRow(self.sound_box)
        dock.setWidget(panel)
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
        # A threshold the user chose is kept; otherwise the model's operating point is used.
        conf = self.conf_slider.value() / 100 if self.settings.contains("conf") else None
        iou = self.iou_slider.value() / 100

        def load() -> None:
            try:
                self.model_ready.emit(Detector(path, backend, conf=conf, iou=iou,
                                               threads=self.cpu_budget.inference_threads, spin=self.cpu_budget.spin))
            except Exception as exc:  # any failure is shown, not raised into Qt
                self.model_failed.emit(f"cannot load model {path}: {exc}")

        threading.Thread(target=load, name="model-loader", daemon=True).start()

    @Slot(object)
    def _on_model_ready(self, detector: Detector) -> None:
        old, self.detector = self.detector, detector
        self.settings.setValue("model", str(detector.model_path))
        self.conf_slider.blockSignals(True)  # shows the threshold in use without saving it as a choice
        self.conf_slider.setValue(round(detector.conf * 100))
        self.conf_slider.blockSignals(False)
        self.statusBar().showMessage(f"model {detector.model_path.name} on {_runs_on(detector)}, "
                                     f"threshold {detector.conf:.2f}", 5000)
        if self.worker is not None:
            self.worker.pipeline.set_detector(detector)
            self.worker.backend = _runs_on(detector)
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
        lossless = not (self.realtime or info.live)
        pipeline = StreamPipeline(self.source, self.detector, lossless=lossless, persistence=self._persistence())
        self.worker = StreamWorker(pipeline, self.detector.info.class_names, _runs_on(self.detector))
        self.worker.show_overlay = self.overlay_box.isChecked()
        self.worker.frame_ready.connect(self._on_frame, Qt.ConnectionType.QueuedConnection)
        self.worker.failed.connect(self.show_error, Qt.ConnectionType.QueuedConnection)
        self.worker.start()
        self.actions["play"].setText("Pause")
        self.setWindowTitle(f"PolypScope — {info.description}")
        return True

    def stop_stream(self) -> None:
        self.stop_recording()
        if self.worker is not None:
            self.worker.stop()
            self.worker = None
        if self.source is not None:
            self.source.close()
            self.source = None

    def _persistence(self) -> PersistenceFilter | None:
        k, n = self.persist_k.value(), self.persist_n.value()
        return PersistenceFilter(PersistenceSettings(min(k, n), n, self.persist_hold.value()))

    # -- frames -----------------------------------------------------------------------
    @Slot(QImage, object, object)
    def _on_frame(self, image: QImage, result: Result, snap) -> None:
        worker = self.worker
        if worker is None or self.sender() is not worker:
            return  # queued by a stream that has since been closed or replaced
        try:
            self.view.set_image(image)
            self.view.repaint()
        finally:
            worker.mark_shown(result)  # the worker sends the next picture only after this
        self.frames_shown += 1
        self.last_result = result
        if self._recording is not None and self.worker is not None:
            self._record(result)
        if not self.seek_slider.isSliderDown():
            self.seek_slider.setValue(result.frame.index)
        alert = len(result.shown) > 0
        if alert and not self._alert_on and self.sound_box.isChecked():
            QApplication.beep()
        self._alert_on = alert
        self.hud_label.setText(f"capture {snap.capture_fps:.1f} fps · inference {snap.inference_fps:.1f} fps · "
                               f"display {snap.display_fps:.1f} fps · latency p50 {snap.latency_p50_ms:.0f} ms · "
                               f"dropped {snap.dropped}")

    def _record(self, result: Result) -> None:
        """Append the frame to the recording; a failed write (disk full) stops the recording
        with what it kept, and playback goes on."""
        video, log = self._recording
        try:
            video.write(self.worker.last_annotated)
            log.write(result.frame.index, result.frame.position_ms, result.detections, result.frame.name)
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
        if self.worker is None or self.worker.last_raw is None:
            self.show_error("nothing to snapshot yet")
            return []
        folder = Path(self.settings.value("snapshot_dir", str(Path.cwd() / "snapshots"), str))
        folder.mkdir(parents=True, exist_ok=True)
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S-%f")
        paths = [folder / f"{stamp}-raw.png", folder / f"{stamp}-overlay.png"]
        cv2.imwrite(str(paths[0]), self.worker.last_raw)
        cv2.imwrite(str(paths[1]), self.worker.last_annotated)
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

    def show_error(self, message: str) -> None:
        self.last_error = message
        self.statusBar().showMessage(f"Error: {message}")

    # -- settings ---------------------------------------------------------------------
    def _on_conf(self) -> None:
        """The user chose a threshold: it replaces the model's operating threshold, now and
        next time."""
        if self.detector is not None:
            self.detector.conf = self.conf_slider.value() / 100
        self.settings.setValue("conf", self.conf_slider.value())

    def _on_iou(self) -> None:
        if self.detector is not None:
            self.detector.iou = self.iou_slider.value() / 100
        self.settings.setValue("iou", self.iou_slider.value())

    def _on_persistence(self) -> None:
        for key, box in (("persist_k", self.persist_k), ("persist_n", self.persist_n), ("persist_hold", self.persist_hold)):
            self.settings.setValue(key, box.value())
        if self.worker is not None:
            self.worker.pipeline.persistence = self._persistence()

    def _on_backend(self, name: str) -> None:
        self.settings.setValue("backend", name)
        if self.detector is not None:
            self.load_model(str(self.detector.model_path))

    def _on_speed(self, text: str) -> None:
        self.settings.setValue("speed", text)
        if self.source is not None and hasattr(self.source, "set_speed"):
            self.source.set_speed(float(text.rstrip("x")))

    def _on_overlay(self, on: bool) -> None:
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
