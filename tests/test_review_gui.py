"""The review workflow and the clinical view, driven through the real windows (offscreen):
the timeline built from the cache, seek by click, next/previous event, marks saved and
reloaded, the summary, clip export, the A/B diff, the stale-frame banner, the clinical
view's brackets and the display path's pictures.

Events are made exact by writing the timeline cache beside the clip before the window
opens (a cache is JSON lines anyone can write): the window must then take its events from
that file, not from a pass of its own."""

import json
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

pytest.importorskip("PySide6.QtWidgets")
from PySide6.QtCore import QPoint, QSettings, Qt  # noqa: E402

from app.gui.main_window import MainWindow  # noqa: E402
from app.gui.threshold_memory import threshold_key  # noqa: E402
from app.review.timeline_cache import FORMAT, CacheKey, timeline_path  # noqa: E402
from app.streaming.sources import Frame, SourceInfo  # noqa: E402
from engine.model_info import sha256_file  # noqa: E402

from .synthetic import write_moving_clip  # noqa: E402

FRAMES = 150
#: (first, last) frames with a box in the cache; with the window's persistence (2 of 3,
#: held 4) each run is shown from its second frame to 4 frames after its last
RUNS = ((20, 39), (70, 84), (110, 129))
SHOWN = [(a + 1, b + 4) for a, b in RUNS]


def write_cache(video: Path, model: Path, runs, frames: int = FRAMES, score: float = 0.8) -> Path:
    sha = sha256_file(model)
    path = timeline_path(video, sha, 0.45)
    header = {"polypscope_timeline": FORMAT, **CacheKey.of(video, sha, 0.45).__dict__, "score_floor": 0.05,
              "video": video.name, "model": model.name, "fps": 25.0, "frame_count": frames, "width": 320,
              "height": 240, "backend": "onnxruntime-cpu fp32"}
    lines = [json.dumps(header)]
    for i in range(frames):
        hit = any(a <= i <= b for a, b in runs)
        lines.append(json.dumps({"frame": i, "timestamp_ms": i * 40.0, "boxes": [[100, 60, 180, 140]] if hit else [],
                                 "scores": [score] if hit else [], "classes": [0] if hit else [],
                                 "inference_ms": 3.0}))
    lines.append(json.dumps({"complete": True, "frames": frames}))
    path.write_text("\n".join(lines) + "\n")
    return path


def settings_at(tmp_path) -> QSettings:
    # The tiny test model carries no operating threshold: the window uses the generic 0.25.
    return QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat)


@pytest.fixture
def reviewed(qtbot, tmp_path, tiny_onnx):
    video = write_moving_clip(tmp_path / "clip.avi", FRAMES)
    cache = write_cache(video, tiny_onnx, RUNS)
    before = cache.stat().st_mtime_ns
    win = MainWindow(str(video), str(tiny_onnx), settings=settings_at(tmp_path), backend="onnxruntime-cpu")
    qtbot.addWidget(win)
    win.resize(1000, 760)
    win.show()
    qtbot.waitUntil(lambda: win.review.timeline is not None and win.frames_shown > 0, timeout=30000)
    win.toggle_pause()
    yield win, video, cache, before
    win.close()


def shown_index(win) -> int:
    return win.last_result.frame.index


def test_the_timeline_and_events_come_from_the_cache(reviewed):
    win, video, cache, before = reviewed
    assert cache.stat().st_mtime_ns == before  # read, not rebuilt
    scores = win.review.strip.scores[0]
    assert len(scores) == FRAMES and scores[25] == pytest.approx(0.8) and scores[50] == 0
    assert [(e.start, e.end) for e in win.review.events] == SHOWN
    assert win.review.panel.count() == 3 and "unmarked" in win.review.panel.item_text(0)
    assert win.review.strip.isVisible() and win.events_dock.isVisible()


def test_click_on_the_strip_seeks_there(reviewed, qtbot):
    win = reviewed[0]
    strip = win.review.strip
    x = round(strip.x_of(100.5))
    target = strip.frame_at(x)
    assert abs(target - 100) <= 1
    qtbot.mouseClick(strip, Qt.MouseButton.LeftButton, pos=QPoint(x, strip.height() // 2))
    qtbot.waitUntil(lambda: shown_index(win) == target, timeout=10000)


def test_next_and_previous_event_keys(reviewed, qtbot):
    win = reviewed[0]
    win.seek(0)
    qtbot.waitUntil(lambda: shown_index(win) == 0, timeout=10000)
    win.review.panel.select(None)
    for expected in (SHOWN[0][0], SHOWN[1][0], SHOWN[2][0]):
        qtbot.keyClick(win, Qt.Key.Key_N)
        qtbot.waitUntil(lambda e=expected: shown_index(win) == e, timeout=10000)
    qtbot.keyClick(win, Qt.Key.Key_N)  # no event after the last: stays
    qtbot.keyClick(win, Qt.Key.Key_P)
    qtbot.waitUntil(lambda: shown_index(win) == SHOWN[1][0], timeout=10000)
    assert win.review.panel.list.currentRow() == 1


def test_marks_are_saved_and_reloaded_and_the_summary_exported(reviewed, qtbot, tmp_path, tiny_onnx):
    win, video = reviewed[0], reviewed[1]
    for k, key in ((0, Qt.Key.Key_1), (1, Qt.Key.Key_2), (2, Qt.Key.Key_3)):
        win.review.go_to(k)
        qtbot.keyClick(win, key)
    marks = json.loads((video.parent / "clip.avi.polypscope" / "marks.json").read_text())["marks"]
    assert [(m["start"], m["label"]) for m in marks] == [(SHOWN[0][0], "polyp"), (SHOWN[1][0], "false alarm"),
                                                         (SHOWN[2][0], "unsure")]
    paths = win.review.export_summary()
    summary = json.loads(paths[0].read_text())
    assert summary["events"] == 3 and summary["marked"]["false alarm"] == 1
    assert summary["false_alarms_per_minute"] == pytest.approx(1 / (FRAMES / 25 / 60), rel=1e-3)
    # onset: the polyp was marked from its first raw detection (frame 20), shown from 21
    assert summary["polyps"][0]["time_to_first_detection_s"] == pytest.approx(1 / 25)
    win.close()
    again = MainWindow(str(video), str(tiny_onnx), settings=settings_at(tmp_path), backend="onnxruntime-cpu")
    qtbot.addWidget(again)
    again.show()
    qtbot.waitUntil(lambda: again.review.panel.count() == 3, timeout=30000)
    assert [again.review.panel.item_text(k).split()[-1] for k in range(3)] == ["polyp", "alarm", "unsure"]
    assert again.review.labels() == ["polyp", "false alarm", "unsure"]
    again.close()


def test_keys_mark_the_event_on_screen_not_an_old_selection(reviewed, qtbot):
    win = reviewed[0]
    win.seek(SHOWN[1][0] + 3)                 # the engineer is in event 2 ...
    inside = lambda: SHOWN[1][0] <= shown_index(win) <= SHOWN[1][1]  # noqa: E731
    qtbot.waitUntil(inside, timeout=10000)
    assert win.review.panel.list.currentRow() == 1  # (the list follows what is on screen)
    win.review.panel.select(0)                # ... with event 1 left selected in the list
    qtbot.keyClick(win, Qt.Key.Key_2)
    assert win.review.labels() == [None, "false alarm", None]


def test_keys_pressed_during_a_jump_act_on_where_it_goes(reviewed, qtbot):
    win = reviewed[0]
    win.seek(0)
    qtbot.waitUntil(lambda: shown_index(win) == 0, timeout=10000)
    qtbot.keyClick(win, Qt.Key.Key_N)         # to event 1 ...
    qtbot.keyClick(win, Qt.Key.Key_N)         # ... and on to event 2, before event 1 is on screen
    qtbot.keyClick(win, Qt.Key.Key_1)
    qtbot.waitUntil(lambda: shown_index(win) == SHOWN[1][0], timeout=10000)
    assert win.review.labels() == [None, "polyp", None]


def test_a_new_nms_iou_makes_a_new_timeline(reviewed, qtbot):
    win, cache = reviewed[0], reviewed[2]
    win.iou_slider.setValue(60)
    qtbot.waitUntil(lambda: win.review.timeline is not None and win.review.timeline.header["nms_iou"] == 0.6,
                    timeout=60000)
    assert win.review.timeline.path.name.endswith("-iou60.jsonl") and len(win.review.timeline.frames) == FRAMES
    # the tiny model's own pass (the hand-written rows all say 3.0 ms) ...
    assert any(f.inference_ms != 3.0 for f in win.review.timeline.frames)
    # ... beside the IoU 0.45 cache, untouched: going back reads it again
    assert cache.is_file() and cache.stat().st_mtime_ns == reviewed[3]
    win.iou_slider.setValue(45)
    qtbot.waitUntil(lambda: win.review.timeline is not None and win.review.timeline.path == cache, timeout=60000)
    assert [(e.start, e.end) for e in win.review.events] == SHOWN


def test_clip_export_around_an_event(reviewed):
    win = reviewed[0]
    win.shape_box.setCurrentText("box")
    win.colour_box.setCurrentText("magenta")  # the clip draws the window's box style
    win.review.go_to(1)
    out = win.review.export_clip(wait=True)
    cap = cv2.VideoCapture(str(out))
    count, magenta = 0, []
    while (ok_frame := cap.read())[0]:
        image = ok_frame[1].astype(int)
        magenta.append(int(((image[..., 2] > 200) & (image[..., 0] > 200) & (image[..., 1] < 110)).sum()))
        count += 1
    start, end = SHOWN[1]
    first = max(0, start - 75)
    assert magenta[(start + end) // 2 - first] > 50 and magenta[0] == 0  # boxes inside the event only
    assert count == min(FRAMES - 1, end + 75) - max(0, start - 75) + 1  # 3 s either side at 25 fps
    assert f"frames{max(0, start - 75)}-" in out.name and "boxes" in out.name and "t0.25" in out.name
    assert not list(out.parent.glob("*.part.avi"))


def test_the_ab_view_diffs_the_events_of_two_models(qtbot, tmp_path, tiny_onnx):
    import onnx

    from app.gui.compare_window import CompareWindow

    video = write_moving_clip(tmp_path / "clip.avi", FRAMES)
    model_b = tmp_path / "b.onnx"
    proto = onnx.load(str(tiny_onnx))
    proto.doc_string = "model B: the same network, another file (another sha256)"
    onnx.save(proto, str(model_b))
    write_cache(video, tiny_onnx, RUNS)
    write_cache(video, model_b, (RUNS[0], (115, 125), (140, 148)))
    win = CompareWindow(video, tiny_onnx, model_b, backend="onnxruntime-cpu", conf_a=0.25, conf_b=0.25,
                        settings=settings_at(tmp_path))
    qtbot.addWidget(win)
    win.resize(1200, 700)
    win.show()
    qtbot.waitUntil(lambda: win.diff is not None and win.frames_shown > 3, timeout=60000)
    assert win.diff.counts() == {"matched": 2, "only_a": 1, "only_b": 1}
    assert [e.start for e in win.diff.only_a] == [SHOWN[1][0]] and [e.start for e in win.diff.only_b] == [141]
    texts = [win.diff_list.item(k).text() for k in range(win.diff_list.count())]
    assert sum(t.startswith("only A") for t in texts) == 1 and sum(t.startswith("only B") for t in texts) == 1
    assert "inference p50 3.0 ms" in win.labels[0].text() and "inference p50 3.0 ms" in win.labels[1].text()
    win.toggle_pause()  # paused, a seek shows the one frame sought
    win.seek(143)  # side by side, inside the event only B raised: B's canvas has the box, A's none
    qtbot.waitUntil(lambda: win.canvases[1].picture is not None and win.canvases[1].picture.index == 143,
                    timeout=10000)
    assert len(win.canvases[1].picture.shown) == 1 and len(win.canvases[0].picture.shown) == 0
    win.overlay_box.setChecked(True)
    assert not win.canvases[1].isVisible()
    win.seek(30)  # inside an event both raised: A's own boxes, and B's in its colour
    qtbot.waitUntil(lambda: win.canvases[0].picture is not None and win.canvases[0].picture.index >= 30
                    and len(win.canvases[0].extra) == 1 and len(win.canvases[0].extra[0][0]) == 1, timeout=10000)
    win.close()


def test_two_models_of_the_same_file_name_are_told_apart(tmp_path):
    from app.gui.compare_window import distinct_names

    a, b = tmp_path / "assets" / "models" / "default.onnx", tmp_path / "runs" / "new" / "default.onnx"
    assert distinct_names(a, b) == ("models/default.onnx", "new/default.onnx")
    assert distinct_names(tmp_path / "a.onnx", tmp_path / "b.onnx") == ("a.onnx", "b.onnx")


# -- the clinical view and the stale-frame banner -----------------------------------------
class StallingSource:
    """A live source whose frames stop while ``flowing`` is clear (a lost feed)."""

    def __init__(self) -> None:
        self.info = SourceInfo("fake scope", 320, 240, 25.0, True, None)
        self.flowing = threading.Event()
        self.flowing.set()
        self._closed = threading.Event()
        self._index = 0
        rng = np.random.default_rng(0)
        self.image = rng.integers(0, 255, (240, 320, 3)).astype(np.uint8)

    def read(self):
        while not self.flowing.wait(0.05):
            if self._closed.is_set():
                return None
        if self._closed.is_set():
            return None
        time.sleep(0.04)
        self._index += 1
        return Frame(self._index, self.image, time.perf_counter())

    def stop(self) -> None:
        self._closed.set()

    def close(self) -> None:
        self._closed.set()

    def seek(self, index: int) -> None:
        pass


def red_banner(win) -> bool:
    pixels = win.view.grab().toImage()
    colour = pixels.pixelColor(5, 5)
    return colour.red() > 150 and colour.green() < 60 and colour.blue() < 60


def test_the_banner_appears_when_the_feed_stalls_and_clears_when_it_recovers(qtbot, tmp_path, tiny_onnx,
                                                                              monkeypatch):
    import app.gui.main_window as main_window

    source = StallingSource()
    monkeypatch.setattr(main_window, "open_source", lambda spec, **kw: source)
    win = MainWindow("scope", str(tiny_onnx), settings=settings_at(tmp_path), backend="onnxruntime-cpu",
                     clinical=True)
    qtbot.addWidget(win)
    win.stale_box.setValue(300)
    qtbot.waitUntil(lambda: win.frames_shown > 5, timeout=30000)
    assert win.isFullScreen() and not win.toolbar.isVisible() and not win.settings_dock.isVisible()
    assert not win.view.stale and not red_banner(win)
    source.flowing.clear()
    qtbot.waitUntil(lambda: win.view.stale, timeout=5000)
    qtbot.wait(400)
    assert win.view.age_s > 0.3 and red_banner(win)
    # the status line no longer shows the last fresh frame's healthy fps and latency
    assert win.view.status_text.endswith("ms") and win.view.status_line().endswith("· no new frames")
    source.flowing.set()
    qtbot.waitUntil(lambda: not win.view.stale, timeout=5000)
    assert not red_banner(win)
    qtbot.keyClick(win, Qt.Key.Key_C)  # its key works with the toolbar hidden
    assert not win.clinical and win.toolbar.isVisible() and not win.isFullScreen()
    win.close()


def test_a_recording_played_to_its_end_says_so_and_is_not_called_stalled(qtbot, tmp_path, tiny_onnx):
    video = write_moving_clip(tmp_path / "short.avi", 20)
    win = MainWindow(str(video), str(tiny_onnx), settings=settings_at(tmp_path), backend="onnxruntime-cpu",
                     realtime=False, review=False)
    qtbot.addWidget(win)
    win.show()
    win.stale_box.setValue(100)
    qtbot.waitUntil(lambda: win.frames_shown == 20 and not win.worker.running, timeout=30000)
    qtbot.waitUntil(lambda: win.view.ended, timeout=2000)
    qtbot.wait(300)  # three times the not-live threshold
    assert not win.view.stale and not red_banner(win)
    win.close()


def test_frames_that_keep_coming_late_keep_the_banner_up(qtbot):
    from app.gui.display.canvas import VideoCanvas
    from app.gui.display.picture import make_picture
    from engine.detections import Detections

    canvas = VideoCanvas()
    qtbot.addWidget(canvas)
    canvas.resize(320, 240)
    frame = np.zeros((240, 320, 3), np.uint8)
    canvas.set_picture(make_picture(frame, Detections(), 0, time.perf_counter()))
    assert not canvas.stale
    canvas.set_picture(make_picture(frame, Detections(), 1, time.perf_counter() - 0.8))  # new, but 0.8 s old
    assert canvas.stale and canvas.age_s >= 0.8
    canvas.ended = True  # a recording at its end is not a stalled feed
    assert not canvas.stale


def test_a_picture_that_is_not_live_is_dimmed_and_its_boxes_turn_grey(qtbot):
    """Not only a banner: a frozen frame and its box must not look like the live picture."""
    from app.gui.display.canvas import BoxStyle, VideoCanvas
    from app.gui.display.picture import make_picture
    from engine.detections import Detections

    canvas = VideoCanvas()
    qtbot.addWidget(canvas)
    canvas.resize(320, 240)
    canvas.box_style = BoxStyle(shape="box", colour="#ffff00", thickness=4, show_scores=False)
    frame = np.full((240, 320, 3), 200, np.uint8)
    box = Detections(np.array([[80, 60, 240, 180]], np.float32), np.array([0.9], np.float32), np.zeros(1, np.int64))

    def look(age_s: float):
        canvas.set_picture(make_picture(frame, box, 0, time.perf_counter() - age_s))
        image = canvas.grab().toImage()
        return image.pixelColor(160, 120), image.pixelColor(80, 120), image.pixelColor(1, 120)

    inside, edge, border = look(0.0)
    assert not canvas.stale
    assert min(inside.red(), inside.green(), inside.blue()) > 180                  # the picture as it is
    assert edge.red() > 200 and edge.green() > 200 and edge.blue() < 80             # a yellow box
    inside, edge, border = look(0.8)
    assert canvas.stale
    assert max(inside.red(), inside.green(), inside.blue()) < 140                   # dimmed
    assert abs(edge.red() - edge.blue()) < 30 and abs(edge.green() - edge.blue()) < 30  # grey, not yellow
    assert border.red() > 150 and border.green() < 60 and border.blue() < 60        # inside a red border


@pytest.mark.parametrize("interval_s, sounded", [(0.0, 3), (600.0, 1)])
def test_the_window_sounds_each_new_polyp_at_most_once_per_interval(qtbot, tmp_path, tiny_onnx, monkeypatch,
                                                                    interval_s, sounded):
    """The window's own wiring of the alert: three events in the recording, played as fast
    as it goes (so the count cannot depend on the machine's speed): each one sounds with no
    interval, only the first with a ten-minute one."""
    import app.gui.main_window as main_window

    beeps = []
    monkeypatch.setattr(main_window.QApplication, "beep", staticmethod(lambda: beeps.append(1)))
    video = write_moving_clip(tmp_path / "clip.avi", FRAMES)
    write_cache(video, tiny_onnx, RUNS)
    settings = settings_at(tmp_path)
    settings.setValue("sound", True)
    settings.setValue("alert_interval_s", interval_s)
    win = MainWindow(str(video), str(tiny_onnx), settings=settings, backend="onnxruntime-cpu", realtime=False)
    qtbot.addWidget(win)
    win.show()
    qtbot.waitUntil(lambda: win.review.timeline is not None and win.frames_shown > 0, timeout=30000)
    win.toggle_pause()
    win.seek(0)
    qtbot.waitUntil(lambda: win.last_result.frame.index == 0, timeout=10000)
    from app.streaming.alerts import AlertLimiter

    win.alerts, win.alerts_sounded = AlertLimiter(interval_s), 0  # (frames before the pause may have sounded)
    beeps.clear()
    win.toggle_pause()
    qtbot.waitUntil(lambda: not win.worker.running, timeout=60000)
    assert win.last_result.frame.index == FRAMES - 1
    assert win.alerts_sounded == sounded and len(beeps) == sounded
    win.close()


def test_the_alert_sound_is_rate_limited():
    from app.streaming.alerts import AlertLimiter

    limiter = AlertLimiter(5.0)
    pattern = [(True, 0.0), (True, 0.1), (False, 0.2), (True, 1.0), (False, 2.0), (True, 6.5), (True, 7.0),
               (False, 8.0), (True, 9.0), (False, 12.0), (True, 12.6)]
    assert [limiter.update(shown, t) for shown, t in pattern] == \
        [True, False, False, False, False, True, False, False, False, False, True]


def test_corner_brackets_leave_the_middle_of_the_box_edges_clear(qtbot):
    from app.gui.display.canvas import BoxStyle, VideoCanvas
    from app.gui.display.picture import make_picture
    from engine.detections import Detections

    frame = np.full((400, 400, 3), 60, np.uint8)
    dets = Detections(np.array([[100, 100, 300, 300]], np.float32), np.array([0.9], np.float32), np.zeros(1, np.int64))
    grabs = {}
    for shape in ("box", "corners"):
        canvas = VideoCanvas()
        qtbot.addWidget(canvas)
        canvas.resize(400, 400)
        canvas.box_style = BoxStyle(shape, "#ffff00", 3.0, show_scores=False)
        canvas.set_picture(make_picture(frame, dets, 0, time.perf_counter(), (400, 400)))
        image = canvas.grab().toImage()
        grabs[shape] = [(image.pixelColor(x, y).red(), image.pixelColor(x, y).blue()) for x, y in
                        ((200, 100), (100, 200), (101, 101), (200, 200))]
    yellow = lambda c: c[0] > 200 and c[1] < 80  # noqa: E731
    assert [yellow(c) for c in grabs["box"]] == [True, True, True, False]
    assert [yellow(c) for c in grabs["corners"]] == [False, False, True, False]  # edges' middles clear


def test_a_picture_is_the_frame_scaled_once_in_qts_native_layout():
    from PySide6.QtGui import QImage

    from app.gui.display.picture import display_size, make_picture
    from engine.detections import Detections

    rng = np.random.default_rng(1)
    frame = cv2.GaussianBlur(rng.integers(0, 255, (1080, 1920, 3)).astype(np.uint8), (0, 0), 3)
    picture = make_picture(frame, Detections(), 7, 1.0, (1000, 700))
    assert display_size((1920, 1080), (1000, 700)) == (1000, 562) == (picture.image.width(), picture.image.height())
    assert picture.image.format() == QImage.Format.Format_RGB32 and picture.frame_size == (1920, 1080)
    shown = np.frombuffer(picture.image.constBits(), np.uint8).reshape(562, picture.image.bytesPerLine())
    expected = cv2.resize(frame, (1000, 562), interpolation=cv2.INTER_LINEAR)
    assert np.array_equal(shown[:, :4000].reshape(562, 1000, 4)[..., :3], expected)
    # the QImage wraps the picture's own buffer (no copy), and that buffer is not the frame's
    assert np.frombuffer(picture.image.constBits(), np.uint8).ctypes.data == picture.pixels.ctypes.data
    assert not np.shares_memory(picture.pixels, frame)
    # more than twice the target: halved by area averaging, then finished bilinearly
    small = make_picture(frame, Detections(), 0, 1.0, (800, 450))
    half = cv2.resize(frame, (960, 540), interpolation=cv2.INTER_AREA)
    expected = cv2.resize(half, (800, 450), interpolation=cv2.INTER_LINEAR)
    got = np.frombuffer(small.image.constBits(), np.uint8).reshape(450, small.image.bytesPerLine())[:, :3200]
    assert np.array_equal(got.reshape(450, 800, 4)[..., :3], expected)
    # a small frame is handed over at its own size (the painter enlarges it)
    assert make_picture(frame[:240, :320], Detections(), 0, 1.0, (1000, 700)).image.width() == 320


DEMO = Path(__file__).resolve().parents[1] / "assets" / "demo" / "demo.mp4"
DEFAULT_MODEL = Path(__file__).resolve().parents[1] / "assets" / "models" / "default.onnx"


@pytest.mark.skipif(not (DEMO.is_file() and DEFAULT_MODEL.is_file()), reason="needs assets/demo and assets/models")
def test_the_windows_review_of_the_demo_clip_has_the_events_of_detect_jsonl(qtbot, tmp_path):
    """The bar as a user meets it: the events the app lists for the demo clip (its own
    background pass, its persistence settings) are those of ``polypscope detect --jsonl``."""
    import shutil

    from app.cli import main
    from app.review.events import find_events
    from app.review.frames import read_detection_log
    from app.streaming.persistence import PersistenceSettings

    video = Path(shutil.copy(DEMO, tmp_path / "demo.mp4"))
    settings = QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat)
    settings.setValue(threshold_key(DEFAULT_MODEL), 50)
    win = MainWindow(str(video), str(DEFAULT_MODEL), settings=settings, backend="onnxruntime-cpu")
    qtbot.addWidget(win)
    win.resize(1000, 700)
    win.show()
    qtbot.waitUntil(lambda: win.review.timeline is not None, timeout=180000)
    listed = list(win.review.events)
    win.close()
    log = tmp_path / "detections.jsonl"
    assert main(["detect", str(video), "--model", str(DEFAULT_MODEL), "--jsonl", str(log), "--quiet",
                 "--threads", "1", "--conf", "0.5"]) == 0
    from_log = find_events(read_detection_log(log), 0.5, PersistenceSettings(2, 3, 4), 25.0)
    assert from_log and listed == from_log  # at least one event, so the comparison is not empty
