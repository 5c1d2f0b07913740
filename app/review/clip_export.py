"""Export a few seconds around an event as a crash-safe Motion-JPEG AVI, with or without
the boxes drawn (the same overlay as the app's recordings, in the box style the user chose,
from the cached detections)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from app.overlay import OverlayStyle, draw_overlay
from app.review.events import Event
from app.streaming.recorder import VideoRecorder
from app.streaming.sources import VideoFileSource
from engine.detections import Detections

DEFAULT_PAD_SECONDS = 3.0


def clip_range(event: Event, fps: float, frame_count: int, pad_seconds: float = DEFAULT_PAD_SECONDS) -> tuple[int, int]:
    """The frames to export (inclusive): the event and ``pad_seconds`` either side, within the video."""
    pad = round(pad_seconds * fps)
    return max(0, event.start - pad), min(frame_count - 1, event.end + pad)


def export_clip(video: str | Path, out: str | Path, first: int, last: int,
                shown: Sequence[Detections] | None = None, class_names: tuple[str, ...] = ("polyp",),
                style: OverlayStyle | None = None) -> int:
    """Write frames ``first..last`` of ``video`` to ``out`` (.avi); with ``shown`` (what the
    window draws on each frame, indexed by frame) the boxes are drawn, in ``style`` (its
    shape, colour and thickness; no HUD, no alert marker). Returns the frames
    written. OpenCV's FFmpeg reader seeks to the keyframe before ``first`` and decodes
    forward, so the clip starts on the frame asked for."""
    source = VideoFileSource(video)
    recorder = None
    try:
        recorder = VideoRecorder(out, source.info.fps, (source.info.width, source.info.height))
        style = replace(style or OverlayStyle(), hud=False, alert=False)
        if first > 0:
            source.seek(first)
        while (frame := source.read()) is not None and frame.index <= last:
            if frame.index < first:
                continue
            image = frame.image
            if shown is not None and frame.index < len(shown) and len(shown[frame.index]):
                image = draw_overlay(image, shown[frame.index], class_names, None, style)
            recorder.write(image)
        return recorder.frames
    finally:
        if recorder is not None:
            recorder.close()
        source.close()
