"""Frame sources: capture devices, video files, image folders and network streams.

Every source reports its frame size and rate and yields :class:`Frame` objects stamped
with the moment they were captured. Live sources (devices, streams) that stop delivering
are reported and reopened with exponential back-off, and their outages are counted;
files end normally. Nothing bad is passed over in silence: an unreadable image is skipped
with a warning (see :mod:`app.streaming.image_files`), a video that ends before the frame
count in its header says so, and every such message goes to ``on_status``.
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

from app.streaming.image_files import UnreadableImage, read_image

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")
VIDEO_SUFFIXES = (".mp4", ".avi", ".mkv", ".mov", ".m4v", ".webm", ".mpg", ".mpeg", ".wmv")
STREAM_SCHEMES = ("rtsp://", "rtsps://", "http://", "https://", "rtmp://", "udp://")
DEFAULT_FOLDER_FPS = 25.0
# Containers whose frame count OpenCV estimates from duration x rate can be off by a frame
# or so; a shortfall beyond this is a file that ended early, not rounding.
EARLY_END_TOLERANCE = 2

StatusCallback = Callable[[str], None]


def _ignore(message: str) -> None:
    pass


class SourceError(RuntimeError):
    """A source that cannot be opened or read; names it and says why."""


class SourceGaveUp(SourceError):
    """A live source delivered no frames for longer than its ``give_up_after``."""


@dataclass(frozen=True)
class EarlyEnd:
    """A video that stopped before the frame count its header announces (truncated file)."""

    frames_read: int
    header_frames: int


@dataclass(frozen=True)
class OutageStats:
    """Times a live source stopped delivering frames, and what it cost.

    ``seconds_without_frames`` runs from the last frame before each outage to the first
    frame after it (to now, for an outage still going on)."""

    outages: int
    seconds_without_frames: float
    reconnects: int
    in_outage: bool
    gave_up: bool


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
    feed would arrive; otherwise frames come as fast as they decode.

    A file that ends before the frame count in its header (truncated: a copy cut short, a
    recording killed) plays what it has; ``ended_early`` then says how far it got, and
    ``on_status`` hears it."""

    def __init__(self, path: str | Path, realtime: bool = False, on_status: StatusCallback | None = None) -> None:
        self.path = Path(path)
        self.realtime = realtime
        self.on_status = on_status or _ignore
        self.ended_early: EarlyEnd | None = None
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
                self._check_early_end()
                return None
        if self.realtime:
            self.pacer.wait(self._index)
        frame = Frame(self._index, image, time.perf_counter(), position_ms=1000 * self._index / self.info.fps)
        self._index += 1
        return frame

    def _check_early_end(self) -> None:
        header = self.info.frame_count
        if header is None or self._index >= header - EARLY_END_TOLERANCE or self.ended_early is not None:
            return
        self.ended_early = EarlyEnd(self._index, header)
        self.on_status(f"{self.path}: the video ended after {self._index} of the {header} frames its header "
                       "announces (truncated file?)")

    def seek(self, index: int) -> None:
        self.cap.set(cv2.CAP_PROP_POS_FRAMES, max(0, index))
        self._first = None
        self._index = max(0, index)
        self.pacer.restart()

    def close(self) -> None:
        self.cap.release()


class ImageFolderSource:
    """Images of a folder in name order, as a video at ``fps``; frames carry file names.

    A frame's index is its file's place in that order, so a skipped file leaves a gap.
    Files that cannot be read are skipped wherever they sort, first included: each is
    reported once to ``on_status`` and kept in ``skipped`` (file name -> why)."""

    def __init__(self, folder: str | Path, fps: float = DEFAULT_FOLDER_FPS, realtime: bool = False,
                 on_status: StatusCallback | None = None) -> None:
        self.folder = Path(folder)
        self.files = sorted(p for p in self.folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not self.files:
            raise SourceError(f"{self.folder}: no images ({', '.join(IMAGE_SUFFIXES)}) in this folder")
        self.on_status = on_status or _ignore
        self.skipped: dict[str, str] = {}
        self.realtime = realtime
        self._index = 0
        self._first = self._next_readable()
        if self._first is None:
            raise SourceError(f"{self.folder}: none of its {len(self.files)} images can be read")
        image = self._first[1]
        self.info = SourceInfo(self.folder.name, image.shape[1], image.shape[0], fps, False, len(self.files))
        self.pacer = Pacer(fps)

    @property
    def speed(self) -> float:
        return self.pacer.speed

    def set_speed(self, speed: float) -> None:
        self.pacer.restart(speed)

    def _next_readable(self) -> tuple[int, np.ndarray] | None:
        """The next file that reads, from ``_index`` on, skipping (and reporting) the rest."""
        while self._index < len(self.files):
            path, index = self.files[self._index], self._index
            self._index += 1
            try:
                return index, read_image(path)
            except UnreadableImage as exc:
                if path.name not in self.skipped:
                    self.skipped[path.name] = str(exc).removeprefix(f"{path}: ")
                    self.on_status(f"{exc}; skipped")
        return None

    def read(self) -> Frame | None:
        found, self._first = self._first or self._next_readable(), None
        if found is None:
            return None
        index, image = found
        if self.realtime:
            self.pacer.wait(index)
        path = self.files[index]
        return Frame(index, image, time.perf_counter(), name=path.name, position_ms=1000 * index / self.info.fps)

    def seek(self, index: int) -> None:
        self._index = min(max(0, index), len(self.files))
        self._first = None
        self.pacer.restart()

    def close(self) -> None:
        pass


class LiveSource:
    """A capture device or network stream that is reopened with back-off when it drops.

    ``open_capture`` makes a ``cv2.VideoCapture``-like object (injectable for tests).
    ``on_status`` receives human-readable messages: when frames stop ("lost"), at each
    retry ("no frames; reopening in 2.0 s"), on "reconnected", and when frames flow again
    ("frames again after 3.1 s without frames"), so a status bar can show the outage.
    ``give_up_after`` (seconds without frames; None: never, as in the app) bounds an
    outage: past it ``read`` raises :class:`SourceGaveUp`. Otherwise ``read`` returns
    ``None`` only after ``stop()``. :meth:`outage_stats` counts the outages.
    """

    def __init__(self, spec: str, open_capture: Callable[[str], object] | None = None,
                 on_status: StatusCallback | None = None, max_backoff: float = 8.0,
                 initial_backoff: float = 0.5, give_up_after: float | None = None) -> None:
        if give_up_after is not None and not give_up_after > 0:
            raise ValueError(f"give_up_after must be > 0 seconds (or None: never), got {give_up_after}")
        self.spec = spec
        self._open = open_capture or _open_cv_capture
        self.on_status = on_status or _ignore
        self.max_backoff = max_backoff
        self.initial_backoff = initial_backoff
        self.give_up_after = give_up_after
        self._stop = threading.Event()
        self.reconnects = 0
        self.outages = 0
        self.gave_up = False
        self._closed_seconds = 0.0            # summed over outages that ended
        self._outage_since: float | None = None
        self._delay = initial_backoff
        self.cap = self._open(spec)
        if not self.cap.isOpened():
            raise SourceError(f"{spec}: cannot open the camera or stream (is it connected, and free?)")
        ok, first = self.cap.read()
        if not ok or first is None:
            raise SourceError(f"{spec}: opened, but it delivers no frames")
        self._first: np.ndarray | None = first
        self._last_frame_at = time.perf_counter()
        fps = self.cap.get(cv2.CAP_PROP_FPS)
        self.info = SourceInfo(spec, first.shape[1], first.shape[0], fps if fps and 1 <= fps <= 240 else 30.0,
                               True, None)
        self._index = 0

    def stop(self) -> None:
        self._stop.set()

    @property
    def in_outage(self) -> bool:
        return self._outage_since is not None

    def outage_stats(self) -> OutageStats:
        ongoing = time.perf_counter() - self._outage_since if self._outage_since is not None else 0.0
        return OutageStats(self.outages, self._closed_seconds + ongoing, self.reconnects, self.in_outage,
                           self.gave_up)

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
        now = time.perf_counter()
        if self._outage_since is not None:
            gap, self._outage_since = now - self._outage_since, None
            self._closed_seconds += gap
            self.on_status(f"{self.spec}: frames again after {gap:.1f} s without frames")
        self._last_frame_at = now
        frame = Frame(self._index, image, now)
        self._index += 1
        return frame

    def _reconnect(self) -> None:
        """Reopen with doubling delays until it opens, ``stop()`` is called, or the outage
        outlasts ``give_up_after`` (then raise :class:`SourceGaveUp`, after at least one
        try). The delay keeps doubling over one outage, also when the source reopens but
        delivers nothing; the first frame after the outage resets it."""
        if self._outage_since is None:
            self._outage_since = self._last_frame_at
            self._delay = self.initial_backoff
            self.outages += 1
            self.on_status(f"{self.spec}: lost (no frames)")
        elif self.give_up_after is not None and self._give_up_in() <= 0:
            self._give_up()
        self.cap.release()
        while not self._stop.is_set():
            wait = self._delay if self.give_up_after is None else min(self._delay, max(0.0, self._give_up_in()))
            self.on_status(f"{self.spec}: no frames; reopening in {wait:.1f} s")
            if self._stop.wait(wait):
                return
            self.cap = self._open(self.spec)
            self._delay = min(self.max_backoff, self._delay * 2)
            if self.cap.isOpened():
                self.reconnects += 1
                self.on_status(f"{self.spec}: reconnected")
                return
            self.cap.release()
            if self.give_up_after is not None and self._give_up_in() <= 0:
                self._give_up()

    def _give_up_in(self) -> float:
        assert self._outage_since is not None and self.give_up_after is not None
        return self._outage_since + self.give_up_after - time.perf_counter()

    def _give_up(self) -> None:
        """Raise, not report: the consumer (through the pipeline's error) decides what to say."""
        self.gave_up = True
        seconds = time.perf_counter() - self._outage_since  # type: ignore[operator]
        raise SourceGaveUp(f"{self.spec}: no frames for {seconds:.1f} s; gave up after {self.give_up_after:g} s")

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
                on_status: StatusCallback | None = None, give_up_after: float | None = None):
    """The right source for ``spec``: a device index or /dev/videoN, a stream URL, a
    folder of images or a video file. ``give_up_after`` applies to live sources only
    (None: retry for ever, as the app does)."""
    kind = classify(spec)
    if kind in ("device", "stream"):
        return LiveSource(spec, on_status=on_status, give_up_after=give_up_after)
    if kind == "folder":
        return ImageFolderSource(spec, folder_fps, realtime, on_status)
    return VideoFileSource(spec, realtime, on_status)


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
