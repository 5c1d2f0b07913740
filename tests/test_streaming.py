import json
import os
import signal
import subprocess
import sys
import threading
import time

import cv2
import numpy as np
import pytest

from app.overlay import HudInfo, draw_overlay, drawn_regions
from app.streaming.handoff import Closed, LatestSlot
from app.streaming.persistence import PersistenceFilter, PersistenceSettings
from app.streaming.pipeline import StreamPipeline, slack_depth
from app.streaming.sources import Frame, LiveSource, SourceError, VideoFileSource, open_source
from engine.detections import Detections

from .conftest import REPO


def test_latest_slot_keeps_only_the_newest():
    slot = LatestSlot()
    for i in range(5):
        slot.put(i)
    assert slot.get(0.1) == 4 and slot.dropped == 4
    slot.close()
    with pytest.raises(Closed):
        slot.get(0.1)


def test_a_deeper_slot_drops_the_oldest_and_keeps_the_order():
    slot = LatestSlot(depth=2)
    for i in range(5):
        slot.put(i)
    assert slot.dropped == 3 and [slot.get(0.1), slot.get(0.1)] == [3, 4]
    with pytest.raises(TimeoutError):
        slot.get(0.01)
    with pytest.raises(ValueError, match="depth"):
        LatestSlot(depth=0)


def test_a_slot_made_shallower_drops_its_oldest_at_once():
    slot = LatestSlot(depth=3)
    for i in range(3):
        slot.put(i)
    slot.set_depth(1)  # detection uncapped while frames wait: only the newest stays
    assert slot.waiting() == 1 and slot.dropped == 2 and slot.get(timeout=0) == 2


def test_lossless_slot_makes_the_producer_wait():
    slot = LatestSlot(lossless=True)
    got = []

    def consume():
        for _ in range(50):
            got.append(slot.get(2))
            time.sleep(0.001)

    t = threading.Thread(target=consume)
    t.start()
    for i in range(50):
        slot.put(i)
    t.join(5)
    assert got == list(range(50)) and slot.dropped == 0


def _dets(*boxes):
    return Detections(np.array(boxes, np.float32).reshape(-1, 4), np.full(len(boxes), 0.9, np.float32),
                      np.zeros(len(boxes), np.int64))


def test_persistence_suppresses_blips_and_holds_boxes():
    f = PersistenceFilter(PersistenceSettings(k=2, n=3, hold=2))
    polyp = [100, 100, 200, 200]
    assert len(f(_dets([400, 400, 450, 450]))) == 0   # a one-frame false positive ...
    assert len(f(_dets())) == 0                        # ... is never shown
    assert len(f(_dets(polyp))) == 0                   # first sighting: not yet
    shown = f(_dets([102, 101, 203, 199]))             # second: shown, at the new place
    assert len(shown) == 1 and shown.boxes[0][0] == 102
    assert len(f(_dets())) == 1 and len(f(_dets())) == 1  # held for two missed frames
    assert len(f(_dets())) == 0


class FakeCamera:
    """A live source producing numbered frames at ``fps`` (pacing like a real camera)."""

    def __init__(self, frames: int, fps: float, size=(64, 80)):
        self.n, self.fps, self.size = frames, fps, size
        self.i = 0
        self.start = time.perf_counter()
        from app.streaming.sources import SourceInfo

        self.info = SourceInfo("fake", size[1], size[0], fps, True, None)

    def read(self):
        if self.i >= self.n:
            return None
        due = self.start + self.i / self.fps
        time.sleep(max(0.0, due - time.perf_counter()))
        frame = Frame(self.i, np.full((*self.size, 3), self.i % 255, np.uint8), time.perf_counter())
        self.i += 1
        return frame


class SlowDetector:
    def __init__(self, seconds: float):
        self.seconds = seconds

    def __call__(self, image):
        time.sleep(self.seconds)
        return Detections()


def test_slow_backend_drops_frames_instead_of_building_latency():
    """Latency counted in frames, not milliseconds (a loaded machine stretches every
    wall-clock figure): each time a result arrives, the frames the camera has produced
    that were neither delivered nor dropped are the ones in flight, at most one per stage
    (being read, frame slot, inference, result slot). A queue instead of one-slot
    hand-offs would have them pile up: about two hundred by the end of this run. (The
    result slot holds two: results can come in pairs, see ``max_detection_hz``.)"""
    camera = FakeCamera(300, fps=100)
    pipeline = StreamPipeline(camera, SlowDetector(0.03)).start()
    delivered, backlog = 0, []
    for result in pipeline.results(timeout=2):
        pipeline.mark_shown(result)
        delivered += 1
        produced = camera.i  # read before the drops: frames dropped meanwhile only lower the count
        backlog.append(produced - delivered - pipeline.dropped)
    assert delivered + pipeline.dropped == 300                     # every frame delivered or counted as dropped
    assert delivered < 200 and pipeline.dropped > 100              # it could not keep up ...
    assert max(backlog) <= 5, backlog                              # ... and nothing queued up


class LockStepFile:
    """A file-like source at ``fps`` (frames carry their position in the file) that gives the
    next frame only once the consumer has taken the last result: no frame can be dropped,
    so which frames are detected on depends on the frame clock alone, never on timing."""

    def __init__(self, frames: int, fps: float):
        from app.streaming.sources import SourceInfo

        self.n, self.fps, self.i = frames, fps, 0
        self.info = SourceInfo("lock-step", 80, 64, fps, False, frames)
        self.consumed = threading.Semaphore(1)

    def read(self):
        if self.i >= self.n or not self.consumed.acquire(timeout=5):
            return None
        frame = Frame(self.i, np.full((64, 80, 3), self.i % 255, np.uint8), time.perf_counter(),
                      position_ms=1000 * self.i / self.fps)
        self.i += 1
        return frame

    def seek(self, index):
        self.i = index


class CountingDetector:
    def __init__(self):
        self.calls = []

    def __call__(self, image):
        self.calls.append(int(image[0, 0, 0]))
        return _dets([10, 10, 30, 30])


@pytest.mark.parametrize("fps, cap, detected_every", [(60, 30, 2), (50, 30, 2), (30, 30, 1), (25, 30, 1),
                                                      (60, None, 1), (120, 30, 4)])
def test_the_detection_rate_cap_shows_every_frame_and_detects_on_some(fps, cap, detected_every):
    source, detector = LockStepFile(24, fps), CountingDetector()
    pipeline = StreamPipeline(source, detector, max_detection_hz=cap).start()
    results = []
    for result in pipeline.results(timeout=2):
        results.append(result)
        pipeline.mark_shown(result)
        source.consumed.release()
    assert [r.frame.index for r in results] == list(range(24)) and pipeline.dropped == 0
    expected = [i % detected_every == 0 for i in range(24)]
    assert [r.inferred for r in results] == expected
    assert detector.calls[1:] == [i for i in range(24) if expected[i]]  # (the first call is the warm-up)
    for r in results:  # a frame passed on carries the boxes of the last frame detected on
        assert len(r.detections) == 1 and (r.inferred or r.stage_ms == (0.0, 0.0, 0.0))


class ReleasingDetector(CountingDetector):
    """Lets the lock-step source read its next frame as soon as a frame has been detected
    on: frames reach inference one at a time, so none is dropped before it."""

    def __init__(self, source):
        super().__init__()
        self.source = source

    def __call__(self, image):
        dets = super().__call__(image)
        self.source.consumed.release()
        return dets


@pytest.mark.parametrize("fps, lost", [(60, 0), (25, 1)])
def test_the_display_may_fall_50_ms_behind_without_losing_a_frame(fps, lost):
    """A display that takes nothing while three frames are detected on (a hiccup of the
    window system): 50 ms at 60 fps costs no frame; at 25 fps three frames are 120 ms, and
    the oldest is dropped rather than shown that late."""
    assert (slack_depth(60), slack_depth(25), slack_depth(240), slack_depth(None)) == (3, 2, 4, 2)
    source = LockStepFile(3, fps)
    source.consumed = threading.Semaphore(0)
    pipeline = StreamPipeline(source, ReleasingDetector(source)).start()
    deadline = time.monotonic() + 10
    while pipeline._results.waiting() + pipeline.dropped_by_stage()["before_display"] < 3:
        assert time.monotonic() < deadline, "the pipeline never produced three results"
        time.sleep(0.005)
    shown = [r.frame.index for r in pipeline.results(timeout=2)]
    assert pipeline.dropped_by_stage() == {"before_inference": 0, "before_display": lost}
    assert shown == list(range(lost, 3))


class BlockingDetector(CountingDetector):
    """Blocks on its first real frame (after the warm-up) until ``release`` is set: a stall
    of the inference thread. Only then may the source read the next frames."""

    def __init__(self, source):
        super().__init__()
        self.source = source
        self.release = threading.Event()

    def __call__(self, image):
        if len(self.calls) == 1:
            self.source.consumed.release(3)
            self.release.wait(10)
        return super().__call__(image)


@pytest.mark.parametrize("fps, lost", [(60, 0), (25, 1)])
def test_with_detection_capped_frames_wait_out_a_50_ms_stall_of_inference(fps, lost):
    """Three frames arrive while inference is stalled on the one before: at 60 fps that is
    50 ms and none is lost (the backlog is then passed on at once); at 25 fps it is 120 ms
    and the oldest is dropped rather than shown that late."""
    source = LockStepFile(4, fps)
    source.consumed = threading.Semaphore(1)  # frame 0; the next three once inference is stalled on it
    detector = BlockingDetector(source)
    pipeline = StreamPipeline(source, detector, max_detection_hz=30).start()

    def end_the_stall_once_three_frames_wait() -> None:
        deadline = time.monotonic() + 10
        while (pipeline._frames.waiting() + pipeline.dropped_by_stage()["before_inference"] < 3
               and time.monotonic() < deadline):
            time.sleep(0.005)
        detector.release.set()

    threading.Thread(target=end_the_stall_once_three_frames_wait, daemon=True).start()
    shown = [r.frame.index for r in pipeline.results(timeout=2)]  # the display, waiting as the app's does
    assert pipeline.dropped_by_stage() == {"before_inference": lost, "before_display": 0}
    assert shown == [0] + list(range(1 + lost, 4))


def test_a_lossless_replay_detects_on_every_frame_whatever_the_cap():
    source, detector = LockStepFile(12, 60), CountingDetector()
    source.consumed = threading.Semaphore(100)
    pipeline = StreamPipeline(source, detector, lossless=True, max_detection_hz=30).start()
    assert all(r.inferred for r in pipeline.results(timeout=2)) and len(detector.calls) == 13


def test_lossless_replay_processes_every_frame():
    pipeline = StreamPipeline(FakeCamera(120, fps=2000), SlowDetector(0.001), lossless=True).start()
    seen = [r.frame.index for r in pipeline.results(timeout=2)]
    assert seen == list(range(120)) and pipeline.dropped == 0


def test_inference_thread_warms_up_before_the_first_capture():
    calls = []

    def recording(image):
        calls.append((threading.current_thread().name, image.shape, int(image.max()), time.perf_counter()))
        return Detections()

    pipeline = StreamPipeline(FakeCamera(5, fps=1000), recording, lossless=True).start()
    results = list(pipeline.results(timeout=2))
    assert [r.frame.index for r in results] == [0, 1, 2, 3, 4]
    thread, shape, brightest, warmed_at = calls[0]
    assert thread == "inference" and shape == (64, 80, 3) and brightest == 0  # a blank frame of the source's size
    assert warmed_at < results[0].frame.captured  # before the first frame was even captured
    assert len(calls) == 1 + len(results)


def test_errors_on_worker_threads_reach_the_consumer():
    def broken(image):
        raise RuntimeError("backend exploded")

    pipeline = StreamPipeline(FakeCamera(10, fps=1000), broken).start()
    with pytest.raises(RuntimeError, match="backend exploded"):
        list(pipeline.results(timeout=2))


class FlakyCapture:
    """Delivers frames, then fails (camera unplugged) until reopened a second time."""

    opened = 0

    def __init__(self, spec):
        FlakyCapture.opened += 1
        self.generation = FlakyCapture.opened
        self.reads = 0

    def isOpened(self):  # noqa: N802 - OpenCV's name
        return self.generation != 2  # the first reopen fails, the next one works

    def read(self):
        self.reads += 1
        if self.generation == 1 and self.reads > 5:
            return False, None
        return True, np.full((48, 64, 3), self.generation * 40, np.uint8)

    def get(self, prop):
        return 30.0

    def release(self):
        pass


def test_dropped_camera_is_reported_and_reopened():
    messages = []
    FlakyCapture.opened = 0
    source = LiveSource("0", open_capture=FlakyCapture, on_status=messages.append, initial_backoff=0.01)
    frames = [source.read() for _ in range(10)]
    assert all(f is not None for f in frames)
    assert frames[-1].image[0, 0, 0] == 120        # frames from the third opening
    assert source.reconnects == 1
    assert any("no frames; reopening" in m for m in messages) and any("reconnected" in m for m in messages)


def test_bad_sources_are_named(tmp_path):
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"\x00" * 1000)
    with pytest.raises(SourceError, match="broken.mp4"):
        VideoFileSource(bad)
    with pytest.raises(SourceError, match="no such file, folder, camera or stream URL"):
        open_source(str(tmp_path / "missing.mp4"))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(SourceError, match="no images"):
        open_source(str(empty))


@pytest.mark.parametrize("shape", ["box", "corners"])
def test_overlay_changes_only_what_it_draws(shape):
    from app.overlay import OverlayStyle

    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, (480, 640, 3), dtype=np.uint8)
    dets = Detections(np.array([[100, 120, 300, 260], [5, 2, 60, 50], [500, 400, 503, 403]], np.float32),
                      np.array([0.91, 0.4, 0.3], np.float32), np.zeros(3, np.int64))  # (the last: a tiny box)
    hud = HudInfo(30.0, 29.5, 30.0, 41.2, 7.9, "onnxruntime-cpu")
    style = OverlayStyle(shape=shape, thickness=3)
    out = draw_overlay(frame, dets, ("polyp",), hud, style)
    allowed = drawn_regions(frame.shape, dets, ("polyp",), hud, style)
    changed = (out != frame).any(axis=2)
    assert changed.sum() > 1000                       # something was drawn ...
    assert not (changed & ~allowed).any()             # ... and nothing outside the overlay
    assert (frame == draw_overlay(frame, Detections(), ("polyp",), None)).all()
    if shape == "corners":  # the middle of the big box's top edge stays as it was
        assert not changed[118:123, 180:220].any()


def _write_video(path, frames=40, size=(96, 96), fps=25):
    from .synthetic import draw_sample

    rng = np.random.default_rng(0)
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, size)
    for _ in range(frames):
        w.write(draw_sample(rng, size[1], size[0], max_polyps=1)[0])
    w.release()
    return path


def test_detect_command_writes_video_log_and_report(tiny_onnx, tmp_path):
    video = _write_video(tmp_path / "clip.mkv")
    out, log, report = tmp_path / "annotated.mkv", tmp_path / "dets.jsonl", tmp_path / "report.json"
    proc = subprocess.run([sys.executable, "-m", "app", "detect", str(video), "--model", str(tiny_onnx),
                           "--out", str(out), "--jsonl", str(log), "--report", str(report), "--conf", "0.05",
                           "--quiet"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    rep = json.loads(report.read_text())
    assert rep["frames"] == 40 and rep["dropped"] == 0 and rep["fps"] > 0 and rep["precision"] == "fp32"
    assert set(rep["latency_ms"]) == {"p50", "p99"} and rep["detections"] >= rep["frames_with_detections"] > 0
    lines = [json.loads(x) for x in log.read_text().splitlines()]
    assert [x["frame"] for x in lines] == list(range(40)) and "boxes" in lines[0] and "scores" in lines[0]
    cap = cv2.VideoCapture(str(out))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 40


def test_detect_on_a_folder_names_images(tiny_onnx, tmp_path):
    folder = tmp_path / "frames"
    folder.mkdir()
    from .synthetic import draw_sample

    rng = np.random.default_rng(1)
    for i in range(5):
        cv2.imwrite(str(folder / f"img{i}.png"), draw_sample(rng, 90, 110)[0])
    log = tmp_path / "d.jsonl"
    proc = subprocess.run([sys.executable, "-m", "app", "detect", str(folder), "--model", str(tiny_onnx),
                           "--jsonl", str(log), "--conf", "0.01", "--quiet"], cwd=REPO, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert [json.loads(x)["image"] for x in log.read_text().splitlines()] == [f"img{i}.png" for i in range(5)]


RECORD_SCRIPT = """
import sys, time, numpy as np
from app.streaming.recorder import VideoRecorder, DetectionLog
from engine.detections import Detections
video, log = VideoRecorder(sys.argv[1], 25, (160, 120)), DetectionLog(sys.argv[2])
for i in range(100000):
    video.write(np.full((120, 160, 3), i % 255, np.uint8))
    log.write(i, i * 40.0, Detections())
    if i == 150:
        print("ready", flush=True)
    time.sleep(0.002)
"""


def test_recording_survives_kill_9(tmp_path):
    video, log = tmp_path / "rec.avi", tmp_path / "rec.jsonl"
    proc = subprocess.Popen([sys.executable, "-c", RECORD_SCRIPT, str(video), str(log)], cwd=REPO,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    time.sleep(0.3)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(10)
    cap = cv2.VideoCapture(str(video))
    readable = 0
    while cap.read()[0]:
        readable += 1
    rows = log.read_text().splitlines()
    complete = [json.loads(r) for r in rows[:-1]]  # the last line may be cut mid-write
    # Line 150 was written (in one unbuffered write) before "ready": all lines up to it
    # survive, however few the writer managed in the 0.3 s before the kill.
    assert len(complete) >= 150 and readable > 100
    assert readable >= len(complete) - 100  # everything but the last few seconds plays


@pytest.mark.parametrize("when", ["before the end", "after the end"])
def test_a_stop_request_cuts_short_only_what_it_interrupts(tmp_path, when):
    """A signal that lands after a replay's last frame leaves it complete (detect then
    reports the end, not the signal); one that lands before stops it early."""
    video = _write_video(tmp_path / "clip.avi", frames=20)
    pipeline = StreamPipeline(VideoFileSource(video), lambda image: Detections(), lossless=True).start()
    got = 0
    for _ in pipeline.results(timeout=0.1):
        got += 1
        if when == "before the end" and got == 5:
            pipeline.request_stop()
    if when == "after the end":
        pipeline.request_stop()
    pipeline.stop()
    assert pipeline.cut_short == (when == "before the end")
    assert got == (5 if when == "before the end" else 20)
