"""Faults the runtime must live through: a camera unplugged mid-stream, a stream that
never comes back, a disk that fills while recording."""

import json
import os
import shutil
import subprocess
import time

import cv2
import numpy as np
import pytest

import app.streaming.sources as sources
from app.cli import main
from app.streaming.pipeline import StreamPipeline
from app.streaming.sources import LiveSource, SourceGaveUp
from engine.detections import Detections

from .synthetic import draw_sample


class ScriptedCapture:
    """Makes ``cv2.VideoCapture`` stand-ins following ``plan``: opening number i delivers
    ``plan[i]`` frames and then fails (unplugged), or fails to open when ``plan[i]`` is
    None; openings past the plan follow ``rest``. Frame pixels hold the opening's number."""

    def __init__(self, plan, frame_seconds=0.0, rest=None):
        self.plan, self.frame_seconds, self.rest, self.opened = plan, frame_seconds, rest, 0

    def __call__(self, spec):
        number, self.opened = self.opened, self.opened + 1
        return _Capture(self.plan[number] if number < len(self.plan) else self.rest, number, self.frame_seconds)


class _Capture:
    def __init__(self, frames, number, frame_seconds):
        self.left, self.number, self.frame_seconds = frames, number, frame_seconds

    def isOpened(self):  # noqa: N802 - OpenCV's name
        return self.left is not None

    def read(self):
        if not self.left:
            return False, None
        self.left -= 1
        time.sleep(self.frame_seconds)
        return True, np.full((48, 64, 3), self.number, np.uint8)

    def get(self, prop):
        return 30.0

    def release(self):
        pass


def test_unplugged_camera_is_reported_reconnected_and_counted():
    messages = []
    source = LiveSource("0", open_capture=ScriptedCapture([20, None, 10**6], frame_seconds=0.001),
                        on_status=messages.append, initial_backoff=0.01)
    pipeline = StreamPipeline(source, lambda image: Detections()).start()
    indices = []
    for result in pipeline.results(timeout=1):
        indices.append(result.frame.index)
        if result.frame.image[0, 0, 0] == 2:  # a frame from the third opening: back
            break
    pipeline.stop()
    stats = source.outage_stats()
    assert (stats.outages, stats.reconnects, stats.in_outage, stats.gave_up) == (1, 1, False, False)
    assert stats.seconds_without_frames >= 0.03  # two back-off waits, 0.01 s then 0.02 s
    assert indices == sorted(indices) and len(indices) >= 2
    order = ["0: lost (no frames)", "0: no frames; reopening in", "0: reconnected", "0: frames again after"]
    firsts = [next(i for i, m in enumerate(messages) if m.startswith(prefix)) for prefix in order]
    assert firsts == sorted(firsts), messages


def test_a_stream_that_reopens_but_sends_nothing_still_gives_up():
    source = LiveSource("rtsp://cam", open_capture=ScriptedCapture([3], rest=0), initial_backoff=0.01,
                        give_up_after=0.1)
    assert [source.read().index for _ in range(3)] == [0, 1, 2]
    with pytest.raises(SourceGaveUp, match="rtsp://cam: no frames for"):
        source.read()
    stats = source.outage_stats()
    assert stats.gave_up and stats.outages == 1 and stats.reconnects >= 1 and stats.seconds_without_frames >= 0.1


def test_a_stream_that_stays_down_gives_up_with_a_report(tiny_onnx, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(sources, "_open_cv_capture", ScriptedCapture([10, 10], frame_seconds=0.005))
    report = tmp_path / "r.json"
    try:
        code = main(["detect", "0", "--model", str(tiny_onnx), "--report", str(report), "--give-up-after", "0.3",
                     "--quiet"])
    except SystemExit as exc:
        code = exc.code
    err = capsys.readouterr().err
    rep = json.loads(report.read_text())
    assert code == 1 and err.strip().splitlines()[-1].startswith("error: 0: no frames for")
    assert rep["stopped_by"] == "source gave up" and "gave up after 0.3 s" in rep["error"]
    outages = rep["outages"]
    assert (outages["outages"], outages["reconnects"], outages["gave_up"]) == (2, 1, True)
    assert outages["seconds_without_frames"] >= 0.3 and 1 <= rep["frames"] <= 20
    assert "0: lost (no frames)" in err and "0: frames again after" in err and "Traceback" not in err


# -- a real full disk --------------------------------------------------------------------
@pytest.fixture
def small_disk(tmp_path):
    """Mounts a tmpfs of the given size (e.g. "4m") and returns its folder; skips where
    mounting is not allowed (not root, or a container without the capability)."""
    mounted = []

    def mount(size):
        folder = tmp_path / f"disk{len(mounted)}"
        folder.mkdir()
        if not hasattr(os, "geteuid") or os.geteuid() != 0:
            pytest.skip("mounting a tmpfs needs root")
        if shutil.which("mount") is None:
            pytest.skip("no 'mount' command on this machine")
        proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip()}")
        mounted.append(folder)
        return folder

    yield mount
    for folder in mounted:
        subprocess.run(["umount", str(folder)], check=False)


def _noisy_clip(path, frames, size=(240, 320)):
    """Noise compresses badly: every frame is a large JPEG, so a small disk fills fast."""
    rng = np.random.default_rng(0)
    writer = cv2.VideoWriter(str(path), cv2.CAP_OPENCV_MJPEG, cv2.VideoWriter_fourcc(*"MJPG"), 25, size[::-1])
    for _ in range(frames):
        writer.write(rng.integers(0, 256, (*size, 3), dtype=np.uint8))
    writer.release()
    return path


def _detect(argv, capsys):
    try:
        code = main(argv)
    except SystemExit as exc:
        code = exc.code
    return code, capsys.readouterr().err


def test_video_on_a_really_full_disk_keeps_what_it_says(small_disk, tiny_onnx, tmp_path, capsys):
    disk = small_disk("4m")
    out, log, report = disk / "a.avi", disk / "d.jsonl", tmp_path / "r.json"
    code, err = _detect(["detect", str(_noisy_clip(tmp_path / "noise.avi", 120)), "--model", str(tiny_onnx),
                         "--out", str(out), "--jsonl", str(log), "--report", str(report), "--quiet"], capsys)
    rep = json.loads(report.read_text())
    kept = rep["recording"]["video_frames"]
    assert code == 1 and err.strip().splitlines()[-1].startswith(f"error: {out}: disk full")
    assert f"keeps its {kept} frames" in rep["error"] and 0 < kept < 120
    cap = cv2.VideoCapture(str(out))
    played = 0
    while cap.read()[0]:
        played += 1
    assert played == kept and int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == kept  # closed properly, index and all
    assert len(log.read_text().splitlines()) == kept


def test_log_on_a_really_full_disk_ends_with_a_whole_line(small_disk, tiny_onnx, tmp_path, capsys):
    disk = small_disk("8k")
    rng = np.random.default_rng(0)
    clip = tmp_path / "c.avi"
    writer = cv2.VideoWriter(str(clip), cv2.CAP_OPENCV_MJPEG, cv2.VideoWriter_fourcc(*"MJPG"), 25, (96, 96))
    for _ in range(200):
        writer.write(draw_sample(rng, 96, 96)[0])
    writer.release()
    log, report = disk / "d.jsonl", tmp_path / "r.json"
    code, err = _detect(["detect", str(clip), "--model", str(tiny_onnx), "--jsonl", str(log), "--conf", "0.02",
                         "--report", str(report), "--quiet"], capsys)
    text = log.read_text()
    rows = [json.loads(line) for line in text.splitlines()]
    assert code == 1 and err.strip().splitlines()[-1].startswith(f"error: {log}: disk full")
    assert text.endswith("\n") and f"after {len(rows)} lines" in err and 0 < len(rows) < 200
    assert [r["frame"] for r in rows] == list(range(len(rows)))
    assert json.loads(report.read_text())["stopped_by"] == "recording failed"
