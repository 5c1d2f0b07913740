"""Recording the annotated video and the detections log so that a crash loses little.

Crash-safe video is Motion-JPEG in AVI written by OpenCV's own writer: every frame is a
self-contained JPEG appended straight to the file, and players read an AVI whose index
was never written, so a recording cut short by a crash or ``kill -9`` still plays up to
its last frames. (MP4 is unreadable without the index written at the end, and FFmpeg's
Matroska muxer holds whole clusters in memory, so a killed .mkv can be empty.) The
detections log is JSON lines, flushed line by line.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import IO

import cv2
import numpy as np

from engine.detections import Detections

CRASH_SAFE_SUFFIXES = (".avi",)
FOURCC_BY_SUFFIX = {".mkv": "MJPG", ".avi": "MJPG", ".mp4": "mp4v", ".m4v": "mp4v", ".mov": "mp4v"}


class RecorderError(RuntimeError):
    pass


class VideoRecorder:
    def __init__(self, path: str | Path, fps: float, size: tuple[int, int]) -> None:
        self.path = Path(path)
        suffix = self.path.suffix.lower()
        if suffix not in FOURCC_BY_SUFFIX:
            raise RecorderError(f"{self.path}: unsupported video type {suffix!r}; use .avi (crash-safe), .mkv or .mp4")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fourcc = cv2.VideoWriter_fourcc(*FOURCC_BY_SUFFIX[suffix])
        if suffix in CRASH_SAFE_SUFFIXES:
            self.writer = cv2.VideoWriter(str(self.path), cv2.CAP_OPENCV_MJPEG, fourcc, max(1.0, fps), size)
        else:
            self.writer = cv2.VideoWriter(str(self.path), fourcc, max(1.0, fps), size)
        if not self.writer.isOpened():
            raise RecorderError(f"{self.path}: OpenCV cannot write this video")
        self.size = size
        self.frames = 0

    def write(self, image: np.ndarray) -> None:
        if (image.shape[1], image.shape[0]) != self.size:
            image = cv2.resize(image, self.size)
        self.writer.write(image)
        self.frames += 1

    def close(self) -> None:
        self.writer.release()


class DetectionLog:
    """One JSON object per processed frame: index, timestamp, boxes, scores (and the
    image name for folder sources). Each line is flushed as it is written (so it survives
    a killed process); ``sync`` also fsyncs it (survives a power cut, costs a disk write)."""

    def __init__(self, path: str | Path, sync: bool = False) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fh: IO[str] = open(self.path, "a", encoding="utf-8")
        self.sync = sync

    def write(self, index: int, timestamp_ms: float | None, dets: Detections, name: str | None = None) -> None:
        row = {"frame": index, "timestamp_ms": None if timestamp_ms is None else round(timestamp_ms, 2)}
        if name is not None:
            row["image"] = name
        row["boxes"] = [[round(float(v), 2) for v in b] for b in dets.boxes]
        row["scores"] = [round(float(s), 5) for s in dets.scores]
        row["classes"] = [int(c) for c in dets.classes]
        self._fh.write(json.dumps(row) + "\n")
        self._fh.flush()
        if self.sync:
            os.fsync(self._fh.fileno())

    def close(self) -> None:
        self._fh.close()
