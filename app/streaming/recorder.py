"""Recording the annotated video and the detections log so that a crash loses little.

Crash-safe video is Motion-JPEG in AVI written by OpenCV's own writer: every frame is a
self-contained JPEG appended straight to the file, and players read an AVI whose index
was never written, so a recording cut short by a crash or ``kill -9`` still plays up to
its last frames. (MP4 is unreadable without the index written at the end, and FFmpeg's
Matroska muxer holds whole clusters in memory, so a killed .mkv can be empty.) The
detections log is JSON lines, each written whole in one system call.

A full disk must not pass unnoticed. OpenCV's writer reports no failed write (the run
would end "successfully" with a video that stops early), so :class:`VideoRecorder`
checks the free space before each frame against a reserve sized from the largest frame
so far, and checks that a crash-safe AVI keeps growing; it stops with a
:class:`RecorderError` while there is still room to close the file, so every frame it
counts plays. :class:`DetectionLog` sees its own write errors: it cuts a half-written
line back off, so the log always ends with a complete line.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

from engine.detections import Detections

CRASH_SAFE_SUFFIXES = (".avi",)
FOURCC_BY_SUFFIX = {".mkv": "MJPG", ".avi": "MJPG", ".mp4": "mp4v", ".m4v": "mp4v", ".mov": "mp4v"}
# Room kept free on the disk: for the container's index and trailer written on close, the
# report and the log's next lines, and a few frames more than the largest so far.
RESERVE_BYTES = 1 << 20
RESERVE_FRAMES = 8
INDEX_BYTES_PER_FRAME = 16          # one AVI idx1 entry
# OpenCV's AVI writer hands the file 32 KiB blocks; an AVI whose estimated output passes
# several blocks with no growth at all is not being written.
STALL_BYTES = 256 << 10
MIN_FRAME_BYTES = 256               # the smallest Motion-JPEG frame (headers and tables)


class RecorderError(RuntimeError):
    """Recording cannot go on (disk full, write error); names the file and what it kept."""


def free_bytes(folder: Path) -> int:
    """Bytes an unprivileged writer may still use on the file system holding ``folder``
    (``statvfs``'s f_bavail x f_frsize on POSIX; portable through ``shutil``)."""
    return shutil.disk_usage(folder).free


def crash_warning(path: str | Path) -> str | None:
    """A one-line warning when a crash would destroy a recording to ``path``, else None."""
    suffix = Path(path).suffix.lower()
    if suffix in CRASH_SAFE_SUFFIXES:
        return None
    return (f"warning: {path}: a {suffix} recording is unreadable if the run crashes or is killed "
            "(its index is written only at the end); use .avi to keep what was recorded")


def smallest_frame_bytes(size: tuple[int, int]) -> int:
    """A lower bound on one Motion-JPEG frame of ``size`` (width, height) in an AVI: a
    uniform black frame at OpenCV's writer quality (75) with its chunk header, halved."""
    ok, data = cv2.imencode(".jpg", np.zeros((size[1], size[0], 3), np.uint8), [cv2.IMWRITE_JPEG_QUALITY, 75])
    return max(MIN_FRAME_BYTES, ((len(data) if ok else 0) + 8) // 2)  # half: margin for other encoder settings


class VideoRecorder:
    """The annotated video. ``write`` raises :class:`RecorderError` instead of losing
    frames when the disk fills; ``frames`` then counts the frames the file keeps once
    closed (exactly when the free-space check stopped it, about when the file had
    stopped growing)."""

    def __init__(self, path: str | Path, fps: float, size: tuple[int, int]) -> None:
        self.path = Path(path)
        suffix = self.path.suffix.lower()
        if suffix not in FOURCC_BY_SUFFIX:
            raise RecorderError(f"{self.path}: unsupported video type {suffix!r}; use .avi (crash-safe), .mkv or .mp4")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fourcc = cv2.VideoWriter_fourcc(*FOURCC_BY_SUFFIX[suffix])
        self.crash_safe = suffix in CRASH_SAFE_SUFFIXES
        if self.crash_safe:
            self.writer = cv2.VideoWriter(str(self.path), cv2.CAP_OPENCV_MJPEG, fourcc, max(1.0, fps), size)
        else:
            self.writer = cv2.VideoWriter(str(self.path), fourcc, max(1.0, fps), size)
        if not self.writer.isOpened():
            raise RecorderError(f"{self.path}: OpenCV cannot write this video")
        self.size = size
        self.frames = 0
        self._largest = size[0] * size[1] * 3 // 4  # a guess until the file first grows
        self._smallest = smallest_frame_bytes(size)
        self._grown = (0, 0)                        # (file size, frames) when it last grew

    def write(self, image: np.ndarray) -> None:
        self._check_space()
        if (image.shape[1], image.shape[0]) != self.size:
            image = cv2.resize(image, self.size)
        self.writer.write(image)
        self.frames += 1
        self._check_growth()

    def reserve(self) -> int:
        """Free bytes needed before the next frame is written."""
        return RESERVE_BYTES + RESERVE_FRAMES * self._largest + INDEX_BYTES_PER_FRAME * (self.frames + 1)

    def _check_space(self) -> None:
        free, need = free_bytes(self.path.parent), self.reserve()
        if free < need:
            raise RecorderError(f"{self.path}: disk full ({free >> 20} MiB free, {need >> 20} MiB needed to go on); "
                                f"recording stopped, the video keeps its {self.frames} frames")

    def _check_growth(self) -> None:
        """Learn the largest frame from how the file grows, and catch a file that stopped
        growing (a write error the free space did not predict: a quota, a network disk)."""
        size = os.path.getsize(self.path)
        last_size, last_frames = self._grown
        if size > last_size:
            self._largest = max(self._largest if last_size else 0, (size - last_size) // (self.frames - last_frames))
            self._grown = (size, self.frames)
            return
        # Judged by the smallest frame this size can encode to (a uniform one), not the
        # average so far: after detailed frames, a run of black "no signal" frames is
        # legitimately many frames per 32 KiB block.
        if self.crash_safe and (self.frames - last_frames) * self._smallest > STALL_BYTES:
            self.frames = last_frames
            raise RecorderError(f"{self.path}: the file stopped growing (disk full or a write error); recording "
                                f"stopped, the video keeps about {last_frames} frames")

    def close(self) -> None:
        self.writer.release()


class DetectionLog:
    """One JSON object per processed frame: index, timestamp, boxes, scores (and the
    image name for folder sources), appended to ``path``.

    Each line goes to the file in one unbuffered write (so it survives a killed process);
    ``sync`` also fsyncs it (survives a power cut, costs a disk write). A failed write is
    cut back to the last complete line and raised as :class:`RecorderError`. Appending to
    a log whose last line was cut by an earlier crash first cuts that partial line off
    (and says so to ``on_status``), so every line of the log parses."""

    def __init__(self, path: str | Path, sync: bool = False, on_status: Callable[[str], None] | None = None) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._size = _cut_partial_line(self.path, on_status)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_BINARY", 0), 0o644)
        self.sync = sync
        self.lines = 0  # written by this log

    def write(self, index: int, timestamp_ms: float | None, dets: Detections, name: str | None = None,
              inferred: bool = True) -> None:
        self.write_row(detection_row(index, timestamp_ms, dets, name, inferred))

    def write_row(self, row: dict) -> None:
        """Append one JSON object as one line (the review's timeline cache adds its own keys)."""
        line = (json.dumps(row) + "\n").encode("utf-8")
        try:
            self._write_all(line)
            if self.sync:
                os.fsync(self._fd)
        except OSError as exc:
            os.ftruncate(self._fd, self._size)
            reason = "disk full" if exc.errno == errno.ENOSPC else (exc.strerror or str(exc))
            raise RecorderError(f"{self.path}: {reason}; log stopped after {self.lines} lines from this run "
                                "(the last line is complete)") from None
        self._size += len(line)
        self.lines += 1

    def _write_all(self, data: bytes) -> None:
        """Write all of ``data``: a nearly full disk may take only part of it per call."""
        view = memoryview(data)
        while view:
            view = view[os.write(self._fd, view):]

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def detection_row(index: int, timestamp_ms: float | None, dets: Detections, name: str | None = None,
                  inferred: bool = True) -> dict:
    """One frame of the detections log. Readers: :func:`app.review.frames.read_detection_log`.

    A frame that was not detected on (passed on under the detection-rate cap with the last
    frame's boxes, ``app.streaming.pipeline``) says so with ``"inferred": false``, so nobody
    reads those boxes as the model's answer on that frame."""
    row: dict = {"frame": index, "timestamp_ms": None if timestamp_ms is None else round(timestamp_ms, 2)}
    if name is not None:
        row["image"] = name
    row["boxes"] = [[round(float(v), 2) for v in b] for b in dets.boxes]
    row["scores"] = [round(float(s), 5) for s in dets.scores]
    row["classes"] = [int(c) for c in dets.classes]
    if not inferred:
        row["inferred"] = False
    return row


def _is_json(data: bytes) -> bool:
    try:
        json.loads(data)
    except ValueError:
        return False
    return True


def _cut_partial_line(path: Path, on_status: Callable[[str], None] | None) -> int:
    """Truncate ``path`` after its last newline if what follows it is not a whole JSON
    record (a line half-written when an earlier run was killed); a whole record without
    its newline (other tools write logs so) only gets the newline. Returns the size."""
    if not path.is_file():
        return 0
    with open(path, "r+b") as fh:
        size = fh.seek(0, os.SEEK_END)
        end = size
        while end > 0:
            start = max(0, end - (64 << 10))
            fh.seek(start)
            newline = fh.read(end - start).rfind(b"\n")
            if newline >= 0:
                end = start + newline + 1
                break
            end = start
        if end == size:
            return size
        fh.seek(end)
        tail = fh.read(size - end)
        if _is_json(tail):  # a complete record written without its newline: keep it
            fh.write(b"\n")
            return size + 1
        fh.truncate(end)
    if on_status is not None:
        on_status(f"warning: {path}: cut off an incomplete last line ({size - end} bytes) left by an earlier run")
    return end
