"""One frame's detections as the review reads them, from a timeline cache or from the
log ``polypscope detect --jsonl`` writes (the same row format, see
:func:`app.streaming.recorder.detection_row`)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engine.detections import Detections


class ReviewFileError(ValueError):
    """A detections log, timeline cache or marks file that cannot be read; names the file
    and the problem in one line."""


@dataclass(frozen=True)
class FrameRecord:
    index: int
    timestamp_ms: float | None
    detections: Detections
    inference_ms: float | None = None
    inferred: bool = True   # False: the last detected frame's boxes, carried over (detection-rate cap)

    @property
    def best_score(self) -> float:
        return float(self.detections.scores.max()) if len(self.detections) else 0.0


def parse_row(row: dict) -> FrameRecord:
    """A :class:`FrameRecord` from one log row; ``KeyError``/``ValueError`` on a bad row."""
    boxes = np.asarray(row["boxes"], np.float32).reshape(-1, 4)
    scores = np.asarray(row["scores"], np.float32).reshape(-1)
    classes = np.asarray(row.get("classes", [0] * len(scores)), np.int64).reshape(-1)
    if not len(boxes) == len(scores) == len(classes):
        raise ValueError(f"{len(boxes)} boxes, {len(scores)} scores and {len(classes)} classes")
    ms = row.get("inference_ms")
    return FrameRecord(int(row["frame"]), row.get("timestamp_ms"), Detections(boxes, scores, classes),
                       None if ms is None else float(ms), bool(row.get("inferred", True)))


def read_detection_log(path: str | Path) -> list[FrameRecord]:
    """Every frame of a ``detect --jsonl`` log, in file order. A bad line is a one-line
    error naming the file and the line number."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ReviewFileError(f"{path}: cannot read the detections log ({exc.strerror or exc})") from None
    frames = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            frames.append(parse_row(json.loads(line)))
        except (ValueError, KeyError, TypeError) as exc:
            raise ReviewFileError(f"{path}: line {number} is not a detections row ({type(exc).__name__}: {exc})") from None
    return frames
