"""Frame sources: capture devices, video files, image folders and network streams.

Every source reports its frame size and rate and yields :class:`Frame` objects stamped
with the moment they were captured. Live sources (devices, streams) that stop delivering
are reported and reopened with exponential back-off; files end normally.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")
VIDEO_SUFFIXES = (".mp4", ".avi", ".mkv", ".mov", ".m4v", ".webm", ".mpg", ".mpeg", ".wmv")
STREAM_SCHEMES = ("rtsp://", "rtsps://", "http://", "https://", "rtmp://", "udp://")
DEFAULT_FOLDER_FPS = 25.0


class SourceError(RuntimeError):
    """A source that cannot be opened or read; names it and says why."""


@dataclass
class Frame:
    """One captured frame. Times are ``time.perf_counter()`` seconds."""

    index: int
    image: np.ndarray
    captured: float
    name: str | None = None         # file name, for image folders
    position_ms: float | None = None  # position in a file


@dataclass(frozen=True)
class SourceInfo:
    description: str
    width: int
    height: int
    fps: float
    live: bool
    frame_count: int | None  # None for live sources


class Pacer:
    """Sleeps so that frame ``index`` is released at ``index / (fps * speed)`` seconds after
    the pacing (re)started; a seek, a speed change or a resume restarts it from now."""

    def __init__(self, fps: float) -> None:
        self.fps = fps
        self.speed = 1.0
        self._start: float | None = None
        self._start_index = 0

    def restart(self, speed: float | None = None) -> None:
        if speed is not None:
            self.speed = max(0.05, float(speed))
        self._start = None

    def wait(self, index: int) -> None:
        now = time.perf_counter()
        if self._start is None:
            self._start, self._start_index = now, index
        due = self._start + (index - self._start_index) / (self.fps * self.speed)
        if due > now:
            time.sleep(due - now)


def classify(spec: str) -> str:
    """"device", "stream", "folder" or "file" for a source given on the command line."""
    if spec.isdigit() or re.fullmatch(r"/dev/video\d+", spec):
        return "device"
    if spec.lower().startswith(STREAM_SCHEMES):
        return "stream"
    path = Path(spec)
    if path.is_dir():
        return "folder"
    if path.is_file():
        return "file"
    raise SourceError(f"{spec}: no such file, folder, camera or stream URL")


class VideoFileSource:
    """A recorded video. ``realtime`` paces reading at the file's own frame rate, as a live
    feed would arrive; otherwise frames come as fast as they decode."""

    def __init__(self, path: str | Path, realtime: bool = False) -> None:
        self.path = Path(path)
        self.realtime = realtime
        self.cap = cv2.VideoCapture(str(self.path))
        if not self.cap.isOpened():
            raise SourceError(f"{self.path}: cannot open as a video (corrupt, or a codec OpenCV lacks)")
        ok, first = self.cap.read()
        if not ok or first is None:
            raise SourceError(f"{self.path}: no frame can be decoded (corrupt or empty video)")
        self._first: np.ndarray | None = first
        fps = self.cap.get(cv2.CAP_PROP_FPS)
        count = int(self.cap.get(cv2.CAP_PROP_FRAME_COUNT))
        self.info = SourceInfo(self.path.name, first.shape[1], first.shape[0],
                               fps if fps and fps > 0 else 25.0, False, count if count > 0 else None)
        self._index = 0
        self.pacer = Pacer(self.info.fps)

    @property
    def speed(self) -> float:
        return self.pacer.speed

    def set_speed(self, speed: float) -> None:
        """Playback speed for real-time pacing (1.0 = the file's own rate)."""
        self.pacer.restart(speed)

    def read(self) -> Frame | None:
        if self._first is not None:
            image, self._first = self._first, None
        else:
            ok, image = self.cap.read()
            if not ok:
                return None
        if self.realtime:
            self.pacer.wait(self._index)
        frame = Frame(self._index, image, time.perf_counter(), position_ms=1000 * self._index / self.info.fps)
        self._index += 1
        return frame

    def seek(self, index: int) -> None:
        self.cap.set(cv2.CAP_PROP_POS_FRAMES, max(0, index))
        self._first = None
        self._index = max(0, index)
        self.pacer.restart()

    def close(self) -> None:
        self.cap.release()


class ImageFolderSource:
    """Images of a folder in name order, as a video at ``fps``; frames carry file names."""

    def __init__(self, folder: str | Path, fps: float = DEFAULT_FOLDER_FPS, realtime: bool = False) -> None:
        self.folder = Path(folder)
        self.files = sorted(p for p in self.folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not self.files:
            raise SourceError(f"{self.folder}: no images ({', '.join(IMAGE_SUFFIXES)}) in this folder")
        first = cv2.imread(str(self.files[0]), cv2.IMREAD_COLOR)
        if first is None:
            raise SourceError(f"{self.files[0]}: cannot decode the image")
        self.realtime = realtime
        self.info = SourceInfo(self.folder.name, first.shape[1], first.shape[0], fps, False, len(self.files))
        self._index = 0
        self.pacer = Pacer(fps)
        self.unreadable: list[str] = []

    @property
    def speed(self) -> float:
        return self.pacer.speed

    def set_speed(self, speed: float) -> None:
        self.pacer.restart(speed)

    def read(self) -> Frame | None:
        while self._index < len(self.files):
            path = self.files[self._index]
            image = cv2.imread(str(path), cv2.IMREAD_COLOR)
            index = self._index
            self._index += 1
            if image is None:
                self.unreadable.append(path.name)
                continue
            if self.realtime:
                self.pacer.wait(index)
            return Frame(index, image, time.perf_counter(), name=path.name, position_ms=1000 * index / self.info.fps)
        return None

    def seek(self, index: int) -> None:
        self._index = min(max(0, index), len(self.files))
        self.pacer.restart()

    def close(self) -> None:
        pass


class LiveSource:
    """A capture device or network stream that is reopened with back-off when it drops.

    ``open_capture`` makes a ``cv2.VideoCapture``-like object (injectable for tests).
    ``on_status`` receives human-readable messages ("camera 0 lost; retrying in 2 s").
    ``read`` returns ``None`` only after ``stop()``.
    """

    def __init__(self, spec: str, open_capture: Callable[[str], object] | None = None,
                 on_status: Callable[[str], None] | None = None, max_backoff: float = 8.0,
                 initial_backoff: float = 0.5) -> None:
        self.spec = spec
        self._open = open_capture or _open_cv_capture
        self.on_status = on_status or (lambda message: None)
        self.max_backoff = max_backoff
        self.initial_backoff = initial_backoff
        self._stop = threading.Event()
        self.reconnects = 0
        self.cap = self._open(spec)
        if not self.cap.isOpened():
            raise SourceError(f"{spec}: cannot open the camera or stream (is it connected, and free?)")
        ok, first = self.cap.read()
        if not ok or first is None:
            raise SourceError(f"{spec}: opened, but it delivers no frames")
        self._first: np.ndarray | None = first
        fps = self.cap.get(cv2.CAP_PROP_FPS)
        self.info = SourceInfo(spec, first.shape[1], first.shape[0], fps if fps and 1 <= fps <= 240 else 30.0,
                               True, None)
        self._index = 0

    def stop(self) -> None:
        self._stop.set()

    def read(self) -> Frame | None:
        if self._first is not None:
            image, self._first = self._first, None
            return self._frame(image)
        while not self._stop.is_set():
            ok, image = self.cap.read()
            if ok and image is not None:
                return self._frame(image)
            self._reconnect()
        return None

    def _frame(self, image: np.ndarray) -> Frame:
        frame = Frame(self._index, image, time.perf_counter())
        self._index += 1
        return frame

    def _reconnect(self) -> None:
        delay = self.initial_backoff
        self.cap.release()
        while not self._stop.is_set():
            self.on_status(f"{self.spec}: no frames; reopening in {delay:.1f} s")
            if self._stop.wait(delay):
                return
            self.cap = self._open(self.spec)
            if self.cap.isOpened():
                self.reconnects += 1
                self.on_status(f"{self.spec}: reconnected")
                return
            self.cap.release()
            delay = min(self.max_backoff, delay * 2)

    def seek(self, index: int) -> None:
        raise SourceError("a live source cannot seek")

    def close(self) -> None:
        self.stop()
        self.cap.release()


def _open_cv_capture(spec: str) -> cv2.VideoCapture:
    if spec.isdigit():
        return cv2.VideoCapture(int(spec))
    return cv2.VideoCapture(spec)


def open_source(spec: str, *, realtime: bool = False, folder_fps: float = DEFAULT_FOLDER_FPS,
                on_status: Callable[[str], None] | None = None):
    """The right source for ``spec``: a device index or /dev/videoN, a stream URL, a
    folder of images or a video file."""
    kind = classify(spec)
    if kind in ("device", "stream"):
        return LiveSource(spec, on_status=on_status)
    if kind == "folder":
        return ImageFolderSource(spec, folder_fps, realtime)
    return VideoFileSource(spec, realtime)


def list_cameras(max_index: int = 8) -> list[str]:
    """Capture devices that open, as their /dev/videoN paths (Linux) or indices."""
    found = []
    devices = sorted(Path("/dev").glob("video*")) if Path("/dev").is_dir() else []
    candidates = [str(d) for d in devices] or [str(i) for i in range(max_index)]
    for spec in candidates:
        cap = _open_cv_capture(spec)
        if cap.isOpened():
            found.append(spec)
        cap.release()
    return found
