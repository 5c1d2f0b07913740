"""The detection timeline of a recording: every frame's detections, computed once per
model and cached beside the video as JSON lines.

Opening a recording for review runs the detector over all of it in the background (as
fast as it goes, every frame) and appends one line per frame to
``VIDEO.polypscope/timeline-<model sha256[:16]>-iou<NMS IoU x 100>.jsonl``. The first line is a header: the
model file's full sha256, the NMS IoU, the score floor the pass kept boxes down to, and
the video's size and modification time. A cache whose header does not match the model,
the video or the NMS settings is stale and rebuilt; one cut short (the window closed,
a crash) resumes where it stopped; the last line, ``{"complete": true}``, marks a whole
pass. Rows have the format of ``polypscope detect --jsonl`` plus the inference time.

Boxes are kept down to a low score floor, so the timeline can show near misses under the
threshold and the threshold can change without a new pass: filtering the floor's
detections at a higher threshold gives exactly what a pass at that threshold gives
(:func:`app.review.events.above`).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from app.review.frames import FrameRecord, ReviewFileError, parse_row
from app.streaming.recorder import DetectionLog, detection_row
from app.streaming.sources import VideoFileSource
from engine.model_info import sha256_file

FORMAT = 1
SCORE_FLOOR = 0.05  # boxes kept by the pass; a threshold below it needs a new pass
FOLDER_SUFFIX = ".polypscope"


def review_dir(video: str | Path) -> Path:
    """Where a recording's review files live: ``VIDEO.polypscope/`` beside it, or, when
    that folder cannot be written (a read-only share), a per-video folder under the
    user's cache (``$XDG_CACHE_HOME/polypscope/review``)."""
    video = Path(video).resolve()
    beside = video.parent / (video.name + FOLDER_SUFFIX)
    try:
        beside.mkdir(exist_ok=True)
        if os.access(beside, os.W_OK):
            return beside
    except OSError:
        pass
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "polypscope" / "review"
    folder = cache / f"{video.name}-{hashlib.sha256(str(video).encode()).hexdigest()[:12]}"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def timeline_path(video: str | Path, model_sha256: str, nms_iou: float = 0.45) -> Path:
    """One cache per model and NMS IoU: moving the IoU and back reuses both passes."""
    return review_dir(video) / f"timeline-{model_sha256[:16]}-iou{round(nms_iou * 100):02d}.jsonl"


@dataclass(frozen=True)
class CacheKey:
    """What the cached detections depend on."""

    model_sha256: str
    nms_iou: float
    video_bytes: int
    video_mtime_ns: int
    #: Box merging after NMS (None: plain NMS); a cache from before the setting has none.
    box_merge_iou: float | None = None

    @classmethod
    def of(cls, video: str | Path, model_sha256: str, nms_iou: float,
           box_merge_iou: float | None = None) -> CacheKey:
        stat = Path(video).stat()
        merge = None if box_merge_iou is None else round(float(box_merge_iou), 4)
        return cls(model_sha256, round(float(nms_iou), 4), stat.st_size, stat.st_mtime_ns, merge)

    def matches(self, header: dict) -> bool:
        return all(header.get(k) == v for k, v in self.__dict__.items())


@dataclass
class Timeline:
    """A recording's per-frame detections (all of them once ``complete``)."""

    header: dict
    frames: list[FrameRecord] = field(default_factory=list)
    complete: bool = False
    path: Path | None = None

    @property
    def fps(self) -> float:
        return float(self.header["fps"])

    @property
    def frame_count(self) -> int:
        """Frames in the video: the header's count, or the frames seen if more."""
        seen = self.frames[-1].index + 1 if self.frames else 0
        return max(int(self.header.get("frame_count") or 0), seen)

    @property
    def score_floor(self) -> float:
        return float(self.header["score_floor"])

    def best_scores(self) -> np.ndarray:
        """The highest score of each frame (0 with no box; NaN where not analysed yet)."""
        out = np.full(self.frame_count, np.nan, np.float32)
        for f in self.frames:
            out[f.index] = f.best_score
        return out

    def inference_ms(self) -> np.ndarray:
        return np.array([f.inference_ms for f in self.frames if f.inference_ms is not None], np.float64)


def load_timeline(path: str | Path, key: CacheKey | None = None) -> Timeline | None:
    """The cache at ``path``; None when there is none or it does not match ``key`` (stale).
    A cut-off last line (a crash mid-write) is ignored; a bad line elsewhere is an error
    naming the file and line."""
    path = Path(path)
    if not path.is_file():
        return None
    lines = path.read_text(encoding="utf-8").split("\n")
    try:
        header = json.loads(lines[0])
    except ValueError:
        return None  # cut off while its first line was written: nothing worth keeping
    if header.get("polypscope_timeline") != FORMAT or (key is not None and not key.matches(header)):
        return None
    timeline = Timeline(header, path=path)
    last = len(lines) - 1
    for number, line in enumerate(lines[1:], 2):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            if row.get("complete"):
                timeline.complete = True
                break
            timeline.frames.append(parse_row(row))
        except (ValueError, KeyError, TypeError) as exc:
            if number - 1 == last:
                break  # the partial last line of an interrupted pass
            raise ReviewFileError(f"{path}: line {number} is not a timeline row ({exc})") from None
    return timeline


#: Called after each analysed frame with its record and the video's frame count (if known).
Progress = Callable[[FrameRecord, int | None], None]


def analyse(video: str | Path, detector, *, path: str | Path | None = None, progress: Progress | None = None,
            should_stop: Callable[[], bool] | None = None) -> Timeline:
    """Run ``detector`` (an :class:`engine.detector.Detector`, its ``conf`` the score floor)
    over every frame of ``video``, appending to the cache; returns the timeline (complete
    unless ``should_stop`` cut it short). A matching complete cache is returned as is; a
    partial one is resumed."""
    model_sha = sha256_file(detector.model_path)
    key = CacheKey.of(video, model_sha, detector.iou, getattr(detector, "merge_iou", None))
    path = Path(path) if path is not None else timeline_path(video, model_sha, detector.iou)
    if should_stop is not None and should_stop():  # stopped while its model loaded: touch nothing
        return Timeline({}, path=path)
    with _exclusive(path):
        timeline = load_timeline(path, key)
        if timeline is not None and timeline.score_floor > detector.conf + 1e-9:
            timeline = None  # kept fewer boxes than now asked for
        if timeline is not None and timeline.complete:
            return timeline
        source = VideoFileSource(video)
        try:
            info = source.info
            if timeline is None:
                path.unlink(missing_ok=True)
                header = {"polypscope_timeline": FORMAT, **key.__dict__,
                          "score_floor": round(float(detector.conf), 5), "video": Path(video).name,
                          "model": Path(detector.model_path).name, "fps": info.fps, "frame_count": info.frame_count,
                          "width": info.width, "height": info.height,
                          "backend": f"{detector.backend_name} {detector.info.precision}"}
                timeline = Timeline(header, path=path)
            log = DetectionLog(path)
            try:
                if log.lines == 0 and path.stat().st_size == 0:
                    log.write_row(timeline.header)
                _run(source, detector, timeline, log, progress, should_stop)
            finally:
                log.close()
        finally:
            source.close()
    return timeline


@contextmanager
def _exclusive(path: Path):
    """Only one pass at a time appends to a cache: a second PolypScope reviewing the same
    recording with the same model gets a one-line error instead of interleaved rows."""
    lock_path = path.with_name(path.name + ".lock")
    with open(lock_path, "a") as lock:
        try:
            import fcntl
        except ImportError:  # Windows: no advisory locks here; one window per recording
            yield
            return
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ReviewFileError(f"{path}: another PolypScope is analysing this recording with this model; "
                                  "open it there, or wait until it is done") from None
        except OSError:  # a file system without locks (NFS without its lock daemon): go on unlocked
            yield
            return
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _run(source: VideoFileSource, detector, timeline: Timeline, log: DetectionLog, progress: Progress | None,
         should_stop: Callable[[], bool] | None) -> None:
    resume_at = timeline.frames[-1].index + 1 if timeline.frames else 0
    total = source.info.frame_count
    while True:
        if should_stop is not None and should_stop():
            return
        frame = source.read()
        if frame is None:
            break
        if frame.index < resume_at:  # decoded in order, not sought: seeking is inexact in some codecs
            continue
        dets = detector(frame.image)
        row = detection_row(frame.index, frame.position_ms, dets)
        row["inference_ms"] = round(detector.last_times.inference, 3)
        log.write_row(row)
        record = parse_row(row)  # the rounded values, exactly as a reload reads them
        timeline.frames.append(record)
        if progress is not None:
            progress(record, total)
    log.write_row({"complete": True, "frames": len(timeline.frames)})
    timeline.complete = True
