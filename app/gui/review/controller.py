"""The review of a recorded procedure inside the main window.

Opening a video file starts the background pass (:mod:`app.gui.review.analysis`); the
strip under the seek bar fills as it goes. Once the whole recording is analysed, events
are computed with the window's threshold and persistence settings (again whenever they
change: the cache holds boxes down to a floor below the threshold, so no new pass is
needed unless the threshold goes below that floor) and listed in the events panel with
their marks and thumbnails. Keys: N / P next / previous event, 1 / 2 / 3 polyp / false
alarm / unsure, 0 clears, O sets when the selected polyp comes into view, E exports a
clip around the selected event.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

from PySide6.QtCore import QObject, Qt, QTimer, Signal
from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import QProgressBar

from app.gui.review.analysis import AnalysisRunner, floor_for
from app.gui.review.events_panel import EventsPanel
from app.gui.review.thumbnails import ThumbnailLoader
from app.gui.review.timeline_strip import TimelineStrip
from app.review.clip_export import clip_range, export_clip
from app.review.events import Event, event_at, find_events, next_event, shown_per_frame
from app.review.frames import ReviewFileError
from app.review.marks import MarkStore
from app.review.summary import summarise, write_summary
from app.review.timeline_cache import Timeline, review_dir
from engine.detector import BACKENDS


class ReviewController(QObject):
    #: a clip export (on its own thread) ended: the message to show
    clip_done = Signal(str)

    def __init__(self, window) -> None:
        super().__init__(window)
        self.window = window
        self.strip = TimelineStrip()
        self.panel = EventsPanel()
        self.progress = QProgressBar()
        self.progress.setMaximumHeight(14)
        self.progress.setFormat("analysing the recording: %p%")
        self.progress.hide()
        self.video: Path | None = None
        self.runner: AnalysisRunner | None = None
        self.timeline: Timeline | None = None
        self.events: list[Event] = []
        #: what the window draws on each frame while reviewing (see :meth:`shown_at`)
        self.shown: list | None = None
        self.marks: MarkStore | None = None
        self.thumbnails: ThumbnailLoader | None = None
        self._old_thumbnails: list[ThumbnailLoader] = []  # kept until their threads end (never freed off-thread)
        self._generation = 0
        #: the event a jump was asked for, until a frame of it reaches the screen (seeks are
        #: asynchronous: keys pressed meanwhile act on where the engineer is going)
        self._pending: int | None = None
        self.strip.seek_requested.connect(self.window.seek)
        self.panel.event_activated.connect(self.go_to)
        self.panel.mark_requested.connect(self.mark_current)
        self.panel.onset_requested.connect(self.set_onset_here)
        self.panel.clip_requested.connect(self.export_clip)
        self.panel.summary_requested.connect(self.export_summary)
        self.clip_done.connect(self._on_clip_done)
        self._exporting = False
        self._refresh_timer = QTimer(self)  # slider ticks: recompute once the user pauses
        self._refresh_timer.setSingleShot(True)
        self._refresh_timer.setInterval(200)
        self._refresh_timer.timeout.connect(self.refresh_events)
        self.actions: dict[str, QAction] = {}
        for key, slot in (("N", lambda: self.step_event(+1)), ("P", lambda: self.step_event(-1)),
                          ("1", lambda: self.mark_current("polyp")), ("2", lambda: self.mark_current("false alarm")),
                          ("3", lambda: self.mark_current("unsure")), ("0", lambda: self.mark_current(None)),
                          ("O", self.set_onset_here), ("E", self.export_clip)):
            action = QAction(f"review {key}", window)
            action.setShortcut(QKeySequence(key))
            action.setShortcutContext(Qt.ShortcutContext.WindowShortcut)
            action.triggered.connect(slot)
            window.addAction(action)
            self.actions[key] = action

    # -- a recording ----------------------------------------------------------------------
    def open(self, video: str | Path, detector) -> None:
        """Start reviewing ``video`` with ``detector``'s model (its own pass, own detector)."""
        self.close()
        self.video = Path(video)
        self.strip.set_length(0)
        self.strip.set_scores(self.strip.scores[0][:0])
        self.strip.set_events([])
        self.panel.set_events([], [])
        self.panel.header.setText(f"analysing {self.video.name} …")
        try:
            self.marks = MarkStore(review_dir(self.video) / "marks.json")
        except ReviewFileError as exc:
            self.marks = None
            self.window.show_error(f"{exc} (marking is off for this recording)")
        self._start_pass(detector)

    def _start_pass(self, detector) -> None:
        self.model_path = Path(detector.model_path)
        backend = detector.backend_name if detector.backend_name in BACKENDS else "auto"
        self.runner = AnalysisRunner(self.video, detector.model_path, backend=backend, iou=detector.iou,
                                     floor=floor_for(detector.conf))
        self.runner.progress.connect(self._on_progress, Qt.ConnectionType.QueuedConnection)
        self.runner.finished.connect(self._on_finished, Qt.ConnectionType.QueuedConnection)
        self.runner.failed.connect(self._on_failed, Qt.ConnectionType.QueuedConnection)
        self.progress.setValue(0)
        self.progress.show()
        self.runner.start()

    def close(self) -> None:
        self._refresh_timer.stop()
        if self.runner is not None:
            self.runner.stop()
            self.runner = None
        self._retire_thumbnails()
        self.timeline, self.events, self.video, self.shown = None, [], None, None
        self._pending = None
        self.progress.hide()

    @property
    def analysing(self) -> bool:
        return self.runner is not None and self.timeline is None

    def _on_failed(self, message: str) -> None:
        if self.runner is not None and self.sender() is self.runner:  # not a replaced pass's
            self.progress.hide()
            self.window.show_error(message)

    def _on_progress(self, done: int, total) -> None:
        if self.runner is None or self.sender() is not self.runner:
            return
        self.strip.set_scores(self.runner.scores.copy())
        if total:
            self.progress.setValue(round(100 * done / total))

    def _on_finished(self, timeline: Timeline) -> None:
        if self.runner is None or self.sender() is not self.runner:
            return
        self.timeline = timeline
        self.progress.hide()
        self.strip.set_length(timeline.frame_count)
        self.strip.set_scores(timeline.best_scores())
        self.refresh_events()

    # -- events ---------------------------------------------------------------------------
    def schedule_refresh(self) -> None:
        """Recompute the events a moment after the last settings change (a slider drag sends
        dozens of changes; each recomputation runs over the whole recording)."""
        if self.timeline is not None:
            self._refresh_timer.start()

    def refresh_events(self) -> None:
        """Events at the window's current threshold and persistence settings."""
        detector = self.window.detector
        if self.timeline is None or detector is None:
            return
        if detector.conf < self.timeline.score_floor:
            # the cache holds too few boxes for this threshold: a new pass, nothing stale shown meanwhile
            self.timeline, self.events, self.shown = None, [], None
            self.strip.set_events([])
            self.panel.set_events([], [])
            self.panel.header.setText("threshold below the timeline's score floor: analysing again …")
            self._start_pass(detector)
            return
        settings = self.window.persistence_settings()
        self.shown = shown_per_frame(self.timeline.frames, detector.conf, settings)
        self.events = find_events(self.timeline.frames, detector.conf, settings, self.timeline.fps, self.shown)
        labels = self.labels()
        self.strip.set_threshold(detector.conf)
        self.strip.set_events(self.events, labels)
        self.panel.set_events(self.events, labels)
        self._header()
        self._pending = None
        self._retire_thumbnails()
        self._generation += 1
        self.thumbnails = ThumbnailLoader(self.video, self.events, self._generation)
        self.thumbnails.ready.connect(self._on_thumbnail, Qt.ConnectionType.QueuedConnection)
        self.thumbnails.start()

    def _retire_thumbnails(self) -> None:
        if self.thumbnails is not None:
            self.thumbnails.stop()
            self._old_thumbnails.append(self.thumbnails)
            self.thumbnails = None
        self._old_thumbnails = [t for t in self._old_thumbnails if t.running]

    def _on_thumbnail(self, generation: int, k: int, image) -> None:
        if generation == self._generation:  # not one still queued by a loader for an older list
            self.panel.set_thumbnail(k, image)

    def shown_at(self, frame: int):
        """The boxes the timeline shows on ``frame`` (None before the pass is done).

        While reviewing, the window draws these rather than the live pipeline's: they come
        from the same model, but the persistence filter ran over the whole recording in
        order, so a frame reached by a seek or a jump to an event shows its boxes at once,
        exactly as the events list counts them (the live filter restarts at each seek)."""
        if self.shown is None or not 0 <= frame < len(self.shown):
            return None
        return self.shown[frame]

    def labels(self) -> list[str | None]:
        return [self.marks.label_of(e) if self.marks else None for e in self.events]

    def _header(self) -> None:
        minutes = self.timeline.frame_count / self.timeline.fps / 60
        labels = self.labels()
        self.panel.header.setText(
            f"{len(self.events)} events in {minutes:.1f} min at threshold {self.window.detector.conf:.2f}; "
            f"{labels.count('polyp')} polyp, {labels.count('false alarm')} false alarm, "
            f"{labels.count('unsure')} unsure, {labels.count(None)} unmarked")

    def current_frame(self) -> int:
        result = self.window.last_result
        return result.frame.index if result is not None else 0

    def current_event(self) -> int | None:
        """The event a jump is heading for, else the event on screen, else the one selected
        in the list (keys act on what the engineer sees; the list follows playback, see
        :meth:`follow`)."""
        if self._pending is not None:
            return self._pending
        on_screen = event_at(self.events, self.current_frame())
        if on_screen is not None:
            return on_screen
        row = self.panel.list.currentRow()
        return row if 0 <= row < len(self.events) else None

    def follow(self, frame: int) -> None:
        """Select the event the frame on screen belongs to, as playback enters it; a jump
        is done once a frame of its event is on screen."""
        k = event_at(self.events, frame)
        if self._pending is not None and k == self._pending:
            self._pending = None
        if self._pending is None and k is not None and k != self.panel.list.currentRow():
            self.panel.select(k)

    def go_to(self, k: int | None) -> None:
        if k is None or not 0 <= k < len(self.events):
            return
        self.panel.select(k)
        self._pending = k
        self.window.seek(self.events[k].start)

    def step_event(self, direction: int) -> None:
        """The next / previous event from the one on screen, or the one a jump is heading for."""
        current = self._pending if self._pending is not None else event_at(self.events, self.current_frame())
        frame = self.events[current].start if current is not None else self.current_frame()
        self.go_to(next_event(self.events, frame, direction))

    def mark_current(self, label: str | None) -> None:
        k = self.current_event()
        if k is None or self.marks is None:
            self.window.statusBar().showMessage("no event selected" if self.marks else "marking is off", 3000)
            return
        try:
            self.marks.mark(self.events[k], label, model=self.model_path.name)
        except OSError as exc:
            self.window.show_error(f"{self.marks.path}: cannot save the marks ({exc.strerror or exc})")
            return
        labels = self.labels()
        self.panel.set_label(k, labels[k])
        self.strip.set_events(self.events, labels)
        self._header()

    def set_onset_here(self) -> None:
        """The selected polyp comes into view at the frame on screen (usually before its
        event: the engineer selects the event, steps back to where the polyp appears, O)."""
        row = self.panel.list.currentRow()
        k = row if 0 <= row < len(self.events) else self.current_event()
        if k is None or self.marks is None:
            return
        try:
            mark = self.marks.set_onset(self.events[k], self.current_frame())
        except ValueError as exc:
            self.window.show_error(str(exc))
            return
        except OSError as exc:
            self.window.show_error(f"{self.marks.path}: cannot save the marks ({exc.strerror or exc})")
            return
        self.window.statusBar().showMessage(f"polyp of event #{k + 1} in view from frame {mark.onset}", 4000)

    # -- exports --------------------------------------------------------------------------
    def summary(self) -> dict:
        return summarise(self.events, self.marks or MarkStore(review_dir(self.video) / "marks.json"),
                         fps=self.timeline.fps, frame_count=self.timeline.frame_count, video=self.video.name,
                         model=self.model_path.name, threshold=self.window.detector.conf)

    def export_summary(self) -> list[Path]:
        if self.timeline is None:
            self.window.show_error("the recording is still being analysed")
            return []
        stem = review_dir(self.video) / f"summary-{self.model_path.stem}"
        try:
            paths = write_summary(self.summary(), stem)
        except (OSError, ReviewFileError) as exc:
            self.window.show_error(f"cannot write the summary to {stem.parent}: {exc}")
            return []
        self.window.statusBar().showMessage(f"summary written: {', '.join(p.name for p in paths)} in {stem.parent}", 8000)
        return paths

    def export_clip(self, wait: bool = False) -> Path | None:
        """A clip around the current event, written on a thread (``wait`` for tests) to a
        temporary name and renamed when whole. The name says which model, threshold and
        frames, so clips of different settings never overwrite each other."""
        k = self.current_event()
        if k is None or self.timeline is None:
            self.window.show_error("select an event to export")
            return None
        if self._exporting:
            self.window.statusBar().showMessage("a clip is being exported; wait for it", 3000)
            return None
        event = self.events[k]
        first, last = clip_range(event, self.timeline.fps, self.timeline.frame_count)
        boxes = self.panel.clip_boxes.isChecked()
        shown = self.shown if boxes else None
        conf = self.window.detector.conf
        out = review_dir(self.video) / (f"{self.video.stem}-{self.model_path.stem}-t{conf:.2f}-frames{first}-{last}-"
                                        f"{'boxes' if boxes else 'plain'}.avi")
        part = out.with_name(out.stem + ".part.avi")
        video = self.video
        style = self.window.view.box_style.overlay_style(hud=False)
        self._exporting = True

        def run() -> None:
            try:
                n = export_clip(video, part, first, last, shown, style=style)
                os.replace(part, out)
                self.clip_done.emit(f"clip written: {out} ({n} frames)")
            except Exception as exc:  # reported, not raised on a thread
                part.unlink(missing_ok=True)
                self.clip_done.emit(f"Error: clip export to {out} failed: {exc}")

        thread = threading.Thread(target=run, name="clip-export", daemon=True)
        thread.start()
        if wait:
            thread.join()
        return out

    def _on_clip_done(self, message: str) -> None:
        self._exporting = False
        if message.startswith("Error: "):
            self.window.show_error(message.removeprefix("Error: "))
        else:
            self.window.statusBar().showMessage(message, 8000)
