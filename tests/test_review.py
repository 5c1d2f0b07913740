"""Reviewing a recording without Qt: events from the persistence filter, the timeline cache
(keyed, resumed, rebuilt when stale), marks that survive a reload, the summary's figures on
a recording with known events, the A/B diff, clip export, and the same events from a review
as from ``polypscope detect --jsonl``."""

import csv
import io
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from app.review.clip_export import clip_range, export_clip
from app.review.event_diff import diff_events
from app.review.events import Event, find_events, next_event, shown_per_frame
from app.review.frames import FrameRecord, ReviewFileError, read_detection_log
from app.review.marks import FALSE_ALARM, POLYP, UNSURE, MarkStore
from app.review.summary import summarise, write_summary
from app.review.timeline_cache import CacheKey, analyse, load_timeline, timeline_path
from app.streaming.persistence import PersistenceSettings
from engine.detections import Detections

from .synthetic import write_moving_clip

BOX = (10.0, 10.0, 50.0, 50.0)
FPS = 25.0


def recording(hits: dict[int, float], frames: int) -> list[FrameRecord]:
    """Frames with one box (at a fixed place) where ``hits`` gives it a score."""
    out = []
    for i in range(frames):
        dets = Detections(np.array([BOX], np.float32), np.array([hits[i]], np.float32), np.zeros(1, np.int64)) \
            if i in hits else Detections()
        out.append(FrameRecord(i, 1000 * i / FPS, dets))
    return out


def same_frames(a: list[FrameRecord], b: list[FrameRecord]) -> bool:
    return [(f.index, f.timestamp_ms, f.detections.as_rows().tolist()) for f in a] == \
        [(f.index, f.timestamp_ms, f.detections.as_rows().tolist()) for f in b]


def run_of(first: int, last: int, score: float = 0.8) -> dict[int, float]:
    return {i: score for i in range(first, last + 1)}


# -- events -------------------------------------------------------------------------------
def test_events_follow_the_persistence_filter():
    # 2 of 3 to show, held 4 frames: a single-frame blip is never shown; a run from 10 to 19 is
    # shown from its second frame to 4 frames after its last; two runs 3 frames apart merge.
    settings = PersistenceSettings(2, 3, 4)
    hits = {5: 0.9, **run_of(10, 19), **run_of(40, 44), **run_of(48, 52, 0.95), 70: 0.3, 71: 0.2}
    events = find_events(recording(hits, 100), 0.25, settings, FPS)
    assert [(e.start, e.end, e.first_hit) for e in events] == [(11, 23, 10), (41, 56, 40)]
    assert events[1].peak_score == pytest.approx(0.95) and 48 <= events[1].peak_frame <= 52
    assert events[0].start_s == pytest.approx(11 / FPS) and events[0].frames == 13
    # frames 70-71 pass a threshold of 0.1 but not 0.25 (strictly above, as the detector's NMS)
    assert len(find_events(recording(hits, 100), 0.1, settings, FPS)) == 3
    assert len(find_events(recording({**hits, 72: 0.25}, 100), 0.25, settings, FPS)) == 2


def test_events_without_persistence_are_the_raw_runs():
    events = find_events(recording({**run_of(3, 4), **run_of(8, 8)}, 12), 0.25, None, FPS)
    assert [(e.start, e.end) for e in events] == [(3, 4), (8, 8)]
    assert next_event(events, 0, +1) == 0 and next_event(events, 3, +1) == 1 and next_event(events, 8, +1) is None
    assert next_event(events, 8, -1) == 0 and next_event(events, 3, -1) is None


# -- marks and summary --------------------------------------------------------------------
def test_marks_are_saved_atomically_reloaded_and_label_other_models_events(tmp_path):
    path = tmp_path / "clip.mp4.polypscope" / "marks.json"
    events = find_events(recording({**run_of(10, 19), **run_of(60, 70)}, 100), 0.25, PersistenceSettings(), FPS)
    store = MarkStore(path)
    store.mark(events[0], POLYP, model="a.onnx")
    store.mark(events[1], FALSE_ALARM, model="a.onnx")
    assert not list(path.parent.glob("*.tmp"))
    again = MarkStore(path)
    assert [again.label_of(e) for e in events] == [POLYP, FALSE_ALARM]
    assert again.polyps()[0].onset == events[0].first_hit
    # another model's event over the same frames gets the same label; relabelling replaces
    other = Event(15, 30, 14, 20, 0.7, BOX, FPS)
    assert again.label_of(other) == POLYP
    again.set_onset(events[0], 5)               # the engineer: the polyp is in view from frame 5
    again.mark(events[0], POLYP)                # marked again: the engineer's onset is kept
    assert MarkStore(path).polyps()[0].onset == 5 and MarkStore(path).polyps()[0].onset_by == "engineer"
    again.mark(other, UNSURE)
    assert MarkStore(path).label_of(events[0]) == UNSURE and len(MarkStore(path).marks) == 2
    again.mark(other, None)
    assert MarkStore(path).label_of(events[0]) is None


def test_a_bad_marks_file_is_named_and_not_overwritten(tmp_path):
    path = tmp_path / "marks.json"
    path.write_text("{not json")
    with pytest.raises(ReviewFileError, match="marks.json: cannot read the marks"):
        MarkStore(path)
    assert path.read_text() == "{not json"


def test_summary_figures_on_a_recording_with_known_events(tmp_path):
    # 60 s at 25 fps; polyps in view from frames 100 and 900, the model raises them at
    # 110-140 and 905-930; false alarms at 400-410 and 1200-1206; one event left unmarked.
    hits = {**run_of(110, 140), **run_of(905, 930), **run_of(400, 410), **run_of(1200, 1206), **run_of(1400, 1405)}
    events = find_events(recording(hits, 1500), 0.25, PersistenceSettings(2, 3, 4), FPS)
    assert len(events) == 5
    store = MarkStore(tmp_path / "marks.json")
    for event, label in zip(events, (POLYP, FALSE_ALARM, POLYP, FALSE_ALARM)):
        store.mark(event, label)
    store.set_onset(events[0], 100)
    store.set_onset(events[2], 900)
    summary = summarise(events, store, fps=FPS, frame_count=1500, video="v.mp4", model="a.onnx", threshold=0.25)
    assert summary["events"] == 5 and summary["minutes"] == pytest.approx(1.0)
    assert summary["marked"] == {"polyp": 2, "false alarm": 2, "unsure": 0, "unmarked": 1}
    assert summary["false_alarms_per_minute"] == pytest.approx(2.0)
    # shown from the second frame of each run (2 of 3): 111 - 100 and 906 - 900 frames
    assert [p["time_to_first_detection_s"] for p in summary["polyps"]] == [pytest.approx(11 / FPS), pytest.approx(6 / FPS)]
    paths = write_summary(summary, tmp_path / "summary")
    assert json.loads(paths[0].read_text())["false_alarms_per_minute"] == pytest.approx(2.0)
    row = next(csv.DictReader(io.StringIO(paths[1].read_text())))
    assert row["false alarm"] == "2" and row["polyps_detected"] == "2" and float(row["minutes"]) == pytest.approx(1.0)
    event_rows = list(csv.DictReader(io.StringIO(paths[2].read_text())))
    assert [r["label"] for r in event_rows] == [POLYP, FALSE_ALARM, POLYP, FALSE_ALARM, ""]
    # a model that misses the second polyp: detected 1 of 2
    missed = [e for e in events if e.start < 800 or e.start > 1000]
    assert summarise(missed, store, fps=FPS, frame_count=1500)["polyps_detected"] == 1


# -- A/B ----------------------------------------------------------------------------------
def test_event_diff_pairs_overlapping_events_once():
    a = [Event(10, 20, 10, 15, 0.9, BOX, FPS), Event(50, 60, 50, 55, 0.9, BOX, FPS), Event(90, 95, 90, 92, 0.9, BOX, FPS)]
    b = [Event(15, 30, 15, 20, 0.8, BOX, FPS), Event(18, 19, 18, 18, 0.8, BOX, FPS), Event(70, 80, 70, 75, 0.8, BOX, FPS)]
    diff = diff_events(a, b)
    assert [(x.start, y.start) for x, y in diff.matched] == [(10, 15)]
    assert [e.start for e in diff.only_a] == [50, 90] and [e.start for e in diff.only_b] == [18, 70]
    assert diff_events(a, b, tolerance=11).counts() == {"matched": 2, "only_a": 1, "only_b": 1}


# -- timeline cache, clip export ----------------------------------------------------------
@pytest.fixture(scope="module")
def floor_detector(tiny_onnx):
    from engine.detector import Detector

    detector = Detector(tiny_onnx, "onnxruntime-cpu", conf=0.01, threads=1)
    yield detector
    detector.close()


def test_the_timeline_is_cached_by_model_resumed_and_rebuilt_when_stale(tmp_path, floor_detector):
    video = write_moving_clip(tmp_path / "clip.avi", 30)
    calls = []
    stop_after = 12

    def progress(record, total):
        calls.append((record.index + 1, total))

    partial = analyse(video, floor_detector, progress=progress, should_stop=lambda: len(calls) >= stop_after)
    assert not partial.complete and len(partial.frames) == stop_after
    path = partial.path
    assert path == timeline_path(video, partial.header["model_sha256"], floor_detector.iou) and path.parent.name == "clip.avi.polypscope"
    # a crash mid-line: the cut-off line is dropped on resume
    with open(path, "a") as fh:
        fh.write('{"frame": 12, "timestamp_ms": 480.0, "boxes": [[1, 2')
    whole = analyse(video, floor_detector, progress=progress)
    assert whole.complete and [f.index for f in whole.frames] == list(range(30))
    assert calls[-1] == (30, 30) and len(calls) == 30  # frames 0-11 were not run again
    reloaded = load_timeline(path, CacheKey.of(video, whole.header["model_sha256"], floor_detector.iou))
    assert reloaded.complete and same_frames(reloaded.frames, whole.frames)
    assert np.array_equal(reloaded.best_scores(), whole.best_scores()) and reloaded.best_scores().max() > 0.01
    # the same pass from scratch gives the same rows; a changed video makes the cache stale
    fresh = analyse(video, floor_detector, path=tmp_path / "fresh.jsonl")
    assert same_frames(fresh.frames, whole.frames)
    write_moving_clip(video, 20, seed=3)
    assert load_timeline(path, CacheKey.of(video, whole.header["model_sha256"], floor_detector.iou)) is None
    assert len(analyse(video, floor_detector).frames) == 20


def numbered_clip(path: Path, frames: int) -> Path:
    """A Motion-JPEG AVI whose frame i is uniformly grey level 2i (readable back after JPEG)."""
    writer = cv2.VideoWriter(str(path), cv2.CAP_OPENCV_MJPEG, cv2.VideoWriter_fourcc(*"MJPG"), FPS, (160, 120))
    for i in range(frames):
        writer.write(np.full((120, 160, 3), (2 * i) % 256, np.uint8))
    writer.release()
    return path


def frame_numbers(path: Path) -> list[int]:
    cap = cv2.VideoCapture(str(path))
    numbers = []
    while (ok_frame := cap.read())[0]:
        numbers.append(round(float(np.median(ok_frame[1])) / 2))
    return numbers


def test_clip_export_writes_exactly_the_padded_range(tmp_path):
    video = numbered_clip(tmp_path / "numbered.avi", 100)
    event = Event(40, 49, 39, 45, 0.9, BOX, FPS)
    first, last = clip_range(event, FPS, 100, pad_seconds=1.0)
    assert export_clip(video, tmp_path / "exact.avi", first, last) == 60
    assert frame_numbers(tmp_path / "exact.avi") == list(range(15, 75))  # the frames asked for, in order


def test_seeking_the_demo_clip_lands_on_the_frame_asked_for():
    """Thumbnails, clip export and review jumps seek; OpenCV's FFmpeg reader must land on
    exactly the frame a sequential decode reaches (checked on the shipped MPEG-4 clip)."""
    from app.streaming.sources import VideoFileSource

    demo = Path(__file__).resolve().parents[1] / "assets" / "demo" / "demo.mp4"
    if not demo.is_file():
        pytest.skip("needs assets/demo/demo.mp4")
    source = VideoFileSource(demo)
    sequential = {}
    while (frame := source.read()) is not None and frame.index <= 230:
        if frame.index in (7, 101, 230):
            sequential[frame.index] = frame.image
    for index, image in sequential.items():
        source.seek(index)
        got = source.read()
        assert got.index == index and np.array_equal(got.image, image), f"seek to {index}"
    source.close()


def test_a_second_pass_on_the_same_cache_is_refused_while_one_runs(tmp_path, floor_detector):
    import fcntl

    video = write_moving_clip(tmp_path / "clip.avi", 10)
    from engine.model_info import sha256_file

    path = timeline_path(video, sha256_file(floor_detector.model_path), floor_detector.iou)
    with open(path.with_name(path.name + ".lock"), "a") as other:   # another process's pass
        fcntl.flock(other, fcntl.LOCK_EX)
        with pytest.raises(ReviewFileError, match="another PolypScope is analysing"):
            analyse(video, floor_detector)
        fcntl.flock(other, fcntl.LOCK_UN)
    assert analyse(video, floor_detector).complete


def test_clip_export_writes_the_padded_range(tmp_path):
    video = write_moving_clip(tmp_path / "clip.avi", 100)
    event = Event(40, 49, 39, 45, 0.9, BOX, FPS)
    first, last = clip_range(event, FPS, 100, pad_seconds=1.0)
    assert (first, last) == (15, 74)
    shown = shown_per_frame(recording(run_of(40, 49), 100), 0.25, None)
    out = tmp_path / "event.avi"
    assert export_clip(video, out, first, last, shown) == 60
    cap = cv2.VideoCapture(str(out))
    frames = []
    while (ok_frame := cap.read())[0]:
        frames.append(ok_frame[1])
    assert len(frames) == 60
    plain = tmp_path / "plain.avi"
    assert export_clip(video, plain, 90, 120) == 10  # clamped at the end of the video
    # with overlay the box outline is drawn in the event's frames only (yellow in BGR)
    yellow = lambda img: int(((img[..., 0] < 80) & (img[..., 1] > 180) & (img[..., 2] > 180)).sum())  # noqa: E731
    assert yellow(frames[30]) > 50 and yellow(frames[0]) < yellow(frames[30]) / 5


def test_a_log_row_says_when_its_boxes_were_carried_over_not_detected(tmp_path):
    from app.review.frames import read_detection_log
    from app.streaming.recorder import DetectionLog

    box = Detections(np.array([BOX], np.float32), np.array([0.8], np.float32), np.zeros(1, np.int64))
    log = DetectionLog(tmp_path / "log.jsonl")
    log.write(0, 0.0, box)
    log.write(1, 16.7, box, inferred=False)  # passed on under the detection-rate cap
    log.close()
    rows = read_detection_log(tmp_path / "log.jsonl")
    assert [r.inferred for r in rows] == [True, False]
    assert "inferred" not in json.loads((tmp_path / "log.jsonl").read_text().splitlines()[0])


def test_a_clip_draws_the_box_style_chosen_and_a_plain_clip_draws_nothing(tmp_path):
    from app.overlay import OverlayStyle

    video = numbered_clip(tmp_path / "numbered.avi", 30)  # uniform dark grey frames
    box = Detections(np.array([[20, 20, 140, 100]], np.float32), np.array([0.9], np.float32), np.zeros(1, np.int64))
    corners = OverlayStyle(shape="corners", colour=(0, 255, 0), thickness=3, show_scores=False)
    assert export_clip(video, tmp_path / "corners.avi", 10, 19, [box] * 30, style=corners) == 10
    assert export_clip(video, tmp_path / "plain.avi", 10, 19) == 10

    def frames(path):
        cap = cv2.VideoCapture(str(path))
        out = []
        while (ok_frame := cap.read())[0]:
            out.append(ok_frame[1].astype(int))
        return out

    for image in frames(tmp_path / "corners.avi"):
        green = (image[..., 1] > 150) & (image[..., 0] < 100) & (image[..., 2] < 100)
        assert green[18:23, 20:35].any() and green[20:35, 18:23].any()   # the top-left bracket, both arms
        assert green[97:102, 125:140].any()                              # and the bottom-right one
        assert not green[15:25, 70:90].any() and not green[50:70, 15:25].any()  # the edges between stay clear
    for image in frames(tmp_path / "plain.avi"):
        assert (image.max(axis=2) - image.min(axis=2)).max() < 30      # grey everywhere: no box at all


# -- the demo clip: a review's events equal detect --jsonl's ------------------------------
DEMO = Path(__file__).resolve().parents[1] / "assets" / "demo" / "demo.mp4"
DEFAULT_MODEL = Path(__file__).resolve().parents[1] / "assets" / "models" / "default.onnx"


@pytest.mark.skipif(not (DEMO.is_file() and DEFAULT_MODEL.is_file()), reason="needs assets/demo and assets/models")
def test_events_of_a_review_of_the_demo_clip_equal_those_of_detect_jsonl(tmp_path):
    import shutil

    from app.cli import main
    from engine.detector import Detector

    video = Path(shutil.copy(DEMO, tmp_path / "demo.mp4"))
    log = tmp_path / "detections.jsonl"
    assert main(["detect", str(video), "--model", str(DEFAULT_MODEL), "--jsonl", str(log), "--quiet",
                 "--threads", "1"]) == 0
    review = Detector(DEFAULT_MODEL, "onnxruntime-cpu", conf=0.05, threads=1)
    try:
        conf = review.info.operating_threshold
        timeline = analyse(video, review)
    finally:
        review.close()
    settings = PersistenceSettings(2, 3, 4)  # detect's defaults
    from_log = find_events(read_detection_log(log), conf, settings, timeline.fps)
    from_review = find_events(timeline.frames, conf, settings, timeline.fps)
    assert from_log and sum(e.frames for e in from_log) > 25  # the clip shows polyps: not an empty comparison
    assert from_review == from_log
    # the cache keeps boxes down to 0.05, so a stricter threshold needs no new pass: at a
    # threshold where the events change, the review's events are those of detect run there.
    # The threshold is found from the cache, not fixed, so that any shipped default has one.
    stricter = [round(t, 2) for t in np.arange(conf + 0.05, 0.95, 0.05)]
    strict_conf = next((t for t in stricter if find_events(timeline.frames, t, settings, timeline.fps) != from_log),
                       None)
    assert strict_conf is not None, "no stricter threshold changes the demo clip's events"
    strict_log = tmp_path / "strict.jsonl"
    assert main(["detect", str(video), "--model", str(DEFAULT_MODEL), "--jsonl", str(strict_log), "--quiet",
                 "--threads", "1", "--conf", str(strict_conf)]) == 0
    strict = find_events(read_detection_log(strict_log), strict_conf, settings, timeline.fps)
    assert strict != from_log and find_events(timeline.frames, strict_conf, settings, timeline.fps) == strict
