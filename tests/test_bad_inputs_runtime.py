"""Issue 10, bad inputs (runtime): every case ends in a clear message, never a traceback,
a silent wrong answer, or lost output."""

import errno
import functools
import json
import os
import signal
import subprocess
import sys
import threading
import time
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

import cv2
import numpy as np
import pytest

from app.cli import main
from app.streaming.image_files import UnreadableImage, read_image
from app.streaming.recorder import DetectionLog
from app.streaming.sources import VideoFileSource
from engine.detector import Detector

from .conftest import REPO
from .synthetic import draw_sample


def _run(argv, capsys):
    """``polypscope`` in-process: (exit status, stdout, stderr); argparse errors included."""
    try:
        code = main(argv)
    except SystemExit as exc:
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


def _clip(path, frames=12, size=(64, 80), seed=0):
    """A small Motion-JPEG AVI of synthetic polyp frames; ``size`` is (height, width)."""
    rng = np.random.default_rng(seed)
    writer = cv2.VideoWriter(str(path), cv2.CAP_OPENCV_MJPEG, cv2.VideoWriter_fourcc(*"MJPG"), 25, size[::-1])
    for _ in range(frames):
        writer.write(draw_sample(rng, *size, max_polyps=1)[0])
    writer.release()
    return path


def _frames_in(video) -> int:
    cap = cv2.VideoCapture(str(video))
    n = 0
    while cap.read()[0]:
        n += 1
    return n


def _jsonl(path):
    text = path.read_text()
    assert text == "" or text.endswith("\n"), "the last line is incomplete"
    return [json.loads(line) for line in text.splitlines()]


# -- 1. thresholds and other arguments ---------------------------------------------------
BAD_ARGUMENTS = [
    (["--conf", "2"], "--conf"), (["--conf", "-1"], "--conf"), (["--conf", "0"], "--conf"),
    (["--conf", "nan"], "--conf"), (["--iou", "1.5"], "--iou"), (["--iou", "-1"], "--iou"),
    (["--iou", "0"], "--iou"), (["--fps", "0"], "--fps"), (["--fps", "-25"], "--fps"),
    (["--threads", "-1"], "--threads"), (["--persist-k", "0"], "--persist-k"),
    (["--persist-n", "0"], "--persist-n"), (["--persist-hold", "-1"], "--persist-hold"),
    (["--persist-k", "4", "--persist-n", "3"], "--persist-k"),
    (["--give-up-after", "0"], "--give-up-after"), (["--give-up-after", "-5"], "--give-up-after"),
    (["--backend", "onnxruntim"], "--backend"),
]


@pytest.mark.parametrize(("extra", "flag"), BAD_ARGUMENTS, ids=lambda v: " ".join(v) if isinstance(v, list) else None)
def test_bad_arguments_are_refused_naming_the_flag(extra, flag, tmp_path, capsys):
    code, _, err = _run(["detect", str(tmp_path), "--model", str(tmp_path / "m.onnx"), *extra], capsys)
    last = err.strip().splitlines()[-1]
    assert code == 2 and flag in last and "error" in last
    assert "Traceback" not in err


@pytest.mark.parametrize(("kwargs", "name"), [({"conf": 1.0}, "conf"), ({"conf": -0.1}, "conf"),
                                              ({"iou": 1.5}, "iou"), ({"iou": -1}, "iou"), ({"iou": 0}, "iou")])
def test_detector_refuses_thresholds_before_loading_anything(kwargs, name, tmp_path):
    with pytest.raises(ValueError, match=f"^{name} must be in"):
        Detector(tmp_path / "never-opened.onnx", **kwargs)


def test_thresholds_set_later_are_checked_too(tiny_onnx):
    det = Detector(tiny_onnx, "onnxruntime-cpu", warmup=0)
    det.conf, det.iou = 0.5, 1.0
    for name, value in (("conf", 2.0), ("conf", 0.0), ("iou", -1.0), ("iou", float("nan"))):
        with pytest.raises(ValueError, match=f"^{name} must be in"):
            setattr(det, name, value)
    assert (det.conf, det.iou) == (0.5, 1.0)  # a refused value changes nothing


# -- 8. --backend onnxruntime ------------------------------------------------------------
def test_plain_onnxruntime_picks_its_best_provider(tiny_onnx, tmp_path, capsys):
    det = Detector(tiny_onnx, "onnxruntime", warmup=0)
    assert det.backend_name in ("onnxruntime-cuda", "onnxruntime-cpu")
    assert det.backend_name == "onnxruntime-cuda" or "onnxruntime-cuda" in det.selection.passed_over
    code, _, err = _run(["detect", str(_clip(tmp_path / "c.avi", 3)), "--model", str(tiny_onnx),
                         "--backend", "onnxruntime", "--quiet"], capsys)
    assert code == 0 and f"backend: {det.backend_name} (best available for 'onnxruntime')" in err


# -- 7. containers a crash destroys -----------------------------------------------------
@pytest.mark.parametrize(("suffix", "warned"), [(".mp4", True), (".mkv", True), (".avi", False)])
def test_recording_to_a_crash_fragile_container_warns(suffix, warned, tiny_onnx, tmp_path, capsys):
    out = tmp_path / f"annotated{suffix}"
    code, _, err = _run(["detect", str(_clip(tmp_path / "c.avi", 3)), "--model", str(tiny_onnx),
                         "--out", str(out), "--quiet"], capsys)
    warnings = [line for line in err.splitlines() if line.startswith("warning:") and str(out) in line]
    assert code == 0 and out.is_file()
    assert len(warnings) == int(warned) and (not warned or "use .avi" in warnings[0])


# -- 4. unreadable images ----------------------------------------------------------------
def _jpeg(seed=0) -> bytes:
    image = draw_sample(np.random.default_rng(seed), 48, 64)[0]
    return cv2.imencode(".jpg", image)[1].tobytes()


def _png(seed=0) -> bytes:
    return cv2.imencode(".png", draw_sample(np.random.default_rng(seed), 48, 64)[0])[1].tobytes()


@pytest.mark.parametrize(("data", "problem"), [
    (lambda: _jpeg()[: len(_jpeg()) // 2], "truncated JPEG"),
    (lambda: _png()[:-20], "truncated PNG"),
    (lambda: b"", "empty file"),
    (lambda: b"not an image at all", "cannot decode"),
])
def test_read_image_names_what_is_wrong(data, problem, tmp_path):
    path = tmp_path / "x.jpg"
    path.write_bytes(data())
    with pytest.raises(UnreadableImage, match=f"x.jpg: {problem}"):
        read_image(path)


@pytest.mark.parametrize("after", [b"\x00" * 100, b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 8],
                         ids=["zero padding", "a motion photo's video"])
def test_read_image_accepts_data_after_the_jpeg_end(tmp_path, after):
    """Only a JPEG cut before its end-of-image marker is truncated; what follows a whole
    image (padding, an appended video, a vendor trailer) is not a reason to skip it."""
    from training.data.image_files import read_image as read_training_image

    path = tmp_path / "padded.jpg"
    path.write_bytes(_jpeg() + after)
    assert read_image(path).shape == read_training_image(path).shape == (48, 64, 3)


def test_unreadable_images_are_skipped_named_and_counted(tiny_onnx, tmp_path, capfd):
    folder = tmp_path / "frames"
    folder.mkdir()
    files = {"a_garbage.jpg": b"not an image", "b.png": _png(1), "c_truncated.jpg": _jpeg(2)[:900],
             "d_padded.jpg": _jpeg(3) + b"\x00" * 32, "e_empty.png": b"", "f.png": _png(4)}
    for name, data in files.items():
        (folder / name).write_bytes(data)
    log, report = tmp_path / "d.jsonl", tmp_path / "r.json"
    code, _, err = _run(["detect", str(folder), "--model", str(tiny_onnx), "--jsonl", str(log),
                         "--report", str(report), "--quiet"], capfd)
    skipped = ["a_garbage.jpg", "c_truncated.jpg", "e_empty.png"]
    assert code == 0
    assert [row["image"] for row in _jsonl(log)] == ["b.png", "d_padded.jpg", "f.png"]
    assert [s["file"] for s in json.loads(report.read_text())["skipped_files"]] == skipped
    assert all(any(name in line and "skipped" in line for line in err.splitlines()) for name in skipped)
    assert "JPEG" not in err.replace("truncated JPEG", "")  # libjpeg never got to complain


# -- 5. a truncated video ----------------------------------------------------------------
def test_truncated_video_says_it_ended_early(tiny_onnx, tmp_path, capsys):
    video = _clip(tmp_path / "cut.avi", frames=60)
    os.truncate(video, video.stat().st_size // 2)
    messages = []
    source = VideoFileSource(video, on_status=messages.append)
    while source.read() is not None:
        pass
    read = source.ended_early.frames_read
    assert source.ended_early.header_frames == 60 and 0 < read < 55 and "ended after" in messages[0]
    report = tmp_path / "r.json"
    code, _, err = _run(["detect", str(video), "--model", str(tiny_onnx), "--report", str(report), "--quiet"], capsys)
    rep = json.loads(report.read_text())
    assert code == 0 and rep["frames"] == read
    assert rep["ended_early"] == {"frames_read": read, "header_frames": 60}
    assert f"cut.avi: the video ended after {read} of the 60 frames" in err


# -- 2. disk full (simulated here; a real full disk in test_faults_runtime.py) ----------
def test_disk_full_stops_the_video_with_what_it_kept(tiny_onnx, tmp_path, capsys, monkeypatch):
    import app.streaming.recorder as recorder

    calls = []

    def filling_disk(folder):
        calls.append(folder)
        return 1 << 40 if len(calls) <= 7 else 4096  # room for 7 frames, then full

    monkeypatch.setattr(recorder, "free_bytes", filling_disk)
    out, log, report = tmp_path / "a.avi", tmp_path / "d.jsonl", tmp_path / "r.json"
    code, stdout, err = _run(["detect", str(_clip(tmp_path / "c.avi", 20)), "--model", str(tiny_onnx),
                              "--out", str(out), "--jsonl", str(log), "--report", str(report), "--quiet"], capsys)
    last = err.strip().splitlines()[-1]
    assert code == 1 and last.startswith(f"error: {out}: disk full") and "keeps its 7 frames" in last
    assert _frames_in(out) == 7 and len(_jsonl(log)) == 7
    rep = json.loads(report.read_text())
    assert rep["stopped_by"] == "recording failed" and rep["recording"]["video_frames"] == 7 and rep["frames"] == 7
    assert json.loads(stdout)["stopped_by"] == "recording failed" and "Traceback" not in err


class _LosingWriter:
    """OpenCV's writer on a disk that fails under it: takes frames, writes nothing, says nothing."""

    def __init__(self, real):
        self.real = real

    def write(self, image):
        pass

    def release(self):
        self.real.release()


def test_a_video_file_that_stops_growing_is_caught(tmp_path):
    from app.streaming.recorder import RecorderError, VideoRecorder

    rng = np.random.default_rng(0)
    video = VideoRecorder(tmp_path / "a.avi", 25, (160, 120))
    for _ in range(5):
        video.write(rng.integers(0, 256, (120, 160, 3), dtype=np.uint8))
    video.writer = _LosingWriter(video.writer)
    with pytest.raises(RecorderError, match="a.avi: the file stopped growing .* keeps about"):
        for _ in range(1000):
            video.write(rng.integers(0, 256, (120, 160, 3), dtype=np.uint8))
    video.close()
    assert 0 < video.frames <= 5 and _frames_in(tmp_path / "a.avi") >= video.frames


@pytest.mark.parametrize("size", [(640, 480), (480, 360), (1280, 720)])
def test_black_frames_after_detailed_ones_are_not_a_stall(tmp_path, size):
    """A "no signal" screen after detailed frames: many frames per 32 KiB block of the
    file, on a healthy disk. Judged by the average frame so far, this was called a full
    disk after 6-12 black frames."""
    from app.streaming.recorder import VideoRecorder

    w, h = size
    rng = np.random.default_rng(0)
    video = VideoRecorder(tmp_path / "a.avi", 25, size)
    for _ in range(40):
        video.write(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
    for _ in range(200):
        video.write(np.zeros((h, w, 3), np.uint8))
    video.close()
    assert video.frames == 240 and _frames_in(tmp_path / "a.avi") == 240


def test_disk_full_in_the_log_keeps_whole_lines(tiny_onnx, tmp_path, capsys, monkeypatch):
    real = DetectionLog._write_all

    def half_then_full(self, data):
        if self.lines == 5:
            os.write(self._fd, data[: len(data) // 2])
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real(self, data)

    monkeypatch.setattr(DetectionLog, "_write_all", half_then_full)
    log, report = tmp_path / "d.jsonl", tmp_path / "r.json"
    code, _, err = _run(["detect", str(_clip(tmp_path / "c.avi", 20)), "--model", str(tiny_onnx),
                         "--jsonl", str(log), "--report", str(report), "--quiet"], capsys)
    last = err.strip().splitlines()[-1]
    assert code == 1 and last.startswith(f"error: {log}: disk full") and "after 5 lines" in last
    assert [row["frame"] for row in _jsonl(log)] == [0, 1, 2, 3, 4]
    assert json.loads(report.read_text())["stopped_by"] == "recording failed"


def test_appending_to_a_log_cut_by_a_crash_drops_the_partial_line(tmp_path):
    log = tmp_path / "d.jsonl"
    log.write_text('{"frame": 0}\n{"frame": 1}\n{"frame": 2, "timest')
    messages = []
    DetectionLog(log, on_status=messages.append).close()
    assert log.read_text() == '{"frame": 0}\n{"frame": 1}\n'
    assert len(messages) == 1 and str(log) in messages[0] and "incomplete last line" in messages[0]


def test_a_log_whose_last_record_lacks_only_its_newline_keeps_it(tmp_path):
    log = tmp_path / "d.jsonl"
    log.write_text('{"frame": 0}\n{"frame": 1}')  # written by a tool that ends without a newline
    messages = []
    DetectionLog(log, on_status=messages.append).close()
    assert log.read_text() == '{"frame": 0}\n{"frame": 1}\n' and messages == []


# -- 3. Ctrl-C and SIGTERM ---------------------------------------------------------------
@pytest.fixture
def http_stream(tmp_path):
    """A clip served over HTTP: opened as a network stream, i.e. a live source that
    reconnects (and so runs on) until stopped."""
    folder = tmp_path / "served"
    folder.mkdir()
    _clip(folder / "live.avi", frames=30)

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(folder)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/live.avi"
    server.shutdown()
    server.server_close()


def _slow_folder(tmp_path):
    folder = tmp_path / "slow"
    folder.mkdir()
    for i in range(100):
        (folder / f"{i:03d}.png").write_bytes(_png(i % 5))
    return str(folder)


@pytest.mark.parametrize(("kind", "sig", "expected"), [
    ("live", signal.SIGINT, 0), ("live", signal.SIGTERM, 0),
    ("replay", signal.SIGINT, 130), ("replay", signal.SIGTERM, 143)], ids=str)
def test_a_signal_closes_the_recording_and_writes_the_report(kind, sig, expected, tiny_onnx, tmp_path, request):
    source = request.getfixturevalue("http_stream") if kind == "live" else _slow_folder(tmp_path)
    out, log, report = tmp_path / "a.avi", tmp_path / "d.jsonl", tmp_path / "r.json"
    extra = [] if kind == "live" else ["--realtime", "--fps", "10"]
    proc = subprocess.Popen([sys.executable, "-m", "app", "detect", source, "--model", str(tiny_onnx), "--out", str(out),
                             "--jsonl", str(log), "--report", str(report), "--quiet", *extra], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (log.is_file() and log.read_text().count("\n") >= 3):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"detect ended or stalled before 3 frames: {proc.communicate()[1]}")
        time.sleep(0.05)
    proc.send_signal(sig)
    stdout, stderr = proc.communicate(timeout=60)
    rep = json.loads(report.read_text())
    assert proc.returncode == expected, stderr
    assert rep["stopped_by"] == sig.name and json.loads(stdout)["stopped_by"] == sig.name
    assert rep["frames"] == len(_jsonl(log)) == _frames_in(out) == rep["recording"]["video_frames"] >= 3
    assert "Traceback" not in stderr
