"""``polypscope detect``: headless replay of a file, folder, camera or stream.

Writes any of: the annotated video (``--out``), a JSON-lines detections log
(``--jsonl``), and a report (``--report``) with frames, drops, FPS and capture-to-result
latency. ``--realtime`` paces a file at its own frame rate, as a live feed would arrive
(frames the model cannot keep up with are dropped and counted); without it every frame
is processed as fast as possible.

How a run ends is in the report ("stopped_by") and the exit status:
  0    the source ended, or a live camera or stream was stopped with Ctrl-C or SIGTERM
  1    an error: the recording failed (disk full), a live source gave up, a bad file
  2    a bad argument
  130  a file or folder replay interrupted by Ctrl-C (143: by SIGTERM)
On Ctrl-C or SIGTERM the recording is closed (complete up to the last frame), the report
written and the summary printed; a second Ctrl-C quits at once. Unreadable images are
skipped with a warning, a video shorter than its header says is reported, and stream
outages are counted: all of it on stderr and in the report.
"""

from __future__ import annotations

import argparse
import json
import math
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict
from enum import Enum
from typing import Any

import numpy as np

from app.overlay import HudInfo, draw_overlay
from app.streaming.persistence import PersistenceFilter, PersistenceSettings
from app.streaming.pipeline import Result, StreamPipeline
from app.streaming.recorder import DetectionLog, RecorderError, VideoRecorder, crash_warning
from app.streaming.sources import SourceGaveUp, open_source
from engine.atomic import atomic_write_text
from engine.detector import BACKENDS, Detector
from engine.postprocess import DEFAULT_CONF, DEFAULT_IOU, DEFAULT_MERGE_SCORE_RATIO, check_conf, check_iou, check_merge

DEFAULT_GIVE_UP_AFTER = 60.0
NEVER = "never"
POLL_SECONDS = 0.1  # how soon a Ctrl-C is seen while a live source delivers nothing


class StopReason(str, Enum):  # (StrEnum is Python 3.11+; we support 3.10)
    END = "end of source"
    SIGINT = "SIGINT"
    SIGTERM = "SIGTERM"
    RECORDING_FAILED = "recording failed"
    SOURCE_GAVE_UP = "source gave up"


def exit_status(stopped_by: StopReason, live: bool) -> int:
    """Stopping a live source by signal is how a live session normally ends (0); a replay
    stopped that way is incomplete (128 + the signal's number, as a shell reports it)."""
    if stopped_by in (StopReason.SIGINT, StopReason.SIGTERM):
        return 0 if live else 128 + signal.Signals[stopped_by.value]
    return 0 if stopped_by is StopReason.END else 1


class StopOnSignals:
    """While active (on the main thread), SIGINT and SIGTERM ask ``pipeline`` to stop
    instead of killing the process, so the recording is closed and the report written.
    ``received`` names the signal. A second signal raises KeyboardInterrupt: a way out if
    stopping hangs."""

    def __init__(self, pipeline: StreamPipeline) -> None:
        self.pipeline = pipeline
        self.received: StopReason | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopOnSignals:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: object) -> None:
        if self.received is not None:
            raise KeyboardInterrupt
        self.received = StopReason(signal.Signals(signum).name)
        self.pipeline.request_stop()  # only sets a flag: safe wherever the signal lands

    def __exit__(self, *exc: object) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)


class Recording:
    """The run's outputs: annotated video and detections log, either optional."""

    def __init__(self, args: argparse.Namespace, info, on_status: Callable[[str], None]) -> None:
        self.video = VideoRecorder(args.out, info.fps, (info.width, info.height)) if args.out else None
        self.log = DetectionLog(args.jsonl, on_status=on_status) if args.jsonl else None

    def write(self, result: Result, pipeline: StreamPipeline, detector: Detector) -> None:
        """Raises RecorderError (naming the file) when either output cannot take the frame."""
        if self.video is not None:
            snap = pipeline.stats.snapshot()
            hud = HudInfo(snap.capture_fps, snap.inference_fps, snap.display_fps, snap.latency_p50_ms,
                          result.stage_ms[1], f"{detector.backend_name} {detector.info.precision}")
            self.video.write(draw_overlay(result.frame.image, result.shown, detector.info.class_names, hud))
        if self.log is not None:
            frame = result.frame
            self.log.write(frame.index, frame.position_ms, result.detections, frame.name, result.inferred)

    def close(self) -> None:
        if self.video is not None:
            self.video.close()
        if self.log is not None:
            self.log.close()

    def summary(self) -> dict[str, Any] | None:
        if self.video is None and self.log is None:
            return None
        return {"video": str(self.video.path) if self.video else None,
                "video_frames": self.video.frames if self.video else None,
                "jsonl": str(self.log.path) if self.log else None,
                "jsonl_lines": self.log.lines if self.log else None}


def _stderr(message: str) -> None:
    print(message, file=sys.stderr)


def run_detect(args: argparse.Namespace) -> int:
    if args.persist_k > args.persist_n:
        _stderr(f"polypscope detect: error: --persist-k ({args.persist_k}) must not exceed "
                f"--persist-n ({args.persist_n})")
        return 2
    if args.out and (warning := crash_warning(args.out)):
        _stderr(warning)
    source = open_source(args.source, realtime=args.realtime, folder_fps=args.fps, on_status=_stderr,
                         give_up_after=args.give_up_after)
    detector = Detector(args.model, args.backend, conf=args.conf, iou=args.iou, threads=args.threads,
                        no_sidecar=args.no_sidecar, merge_iou=args.merge_iou)
    _stderr(detector.selection.explain())
    persistence = None if args.no_persistence else PersistenceFilter(
        PersistenceSettings(args.persist_k, args.persist_n, args.persist_hold))
    live = source.info.live or args.realtime
    pipeline = StreamPipeline(source, detector, lossless=not live, persistence=persistence)
    report = replay(pipeline, detector, args, source)
    status = exit_status(StopReason(report["stopped_by"]), source.info.live)
    if args.report:
        try:
            atomic_write_text(args.report, json.dumps(report, indent=2))
        except OSError as exc:
            _stderr(f"error: {args.report}: cannot write the report ({exc.strerror or exc})")
            status = status or 1
    keys = ("frames", "dropped", "fps", "frames_with_detections", "detections", "latency_ms", "stopped_by")
    summary = {k: report[k] for k in keys}
    print(json.dumps({**summary, **({"error": report["error"]} if report["error"] else {})}))
    if report["error"]:
        _stderr(f"error: {report['error']}")
    return status


def replay(pipeline: StreamPipeline, detector: Detector, args: argparse.Namespace, source) -> dict[str, Any]:
    """Consume ``pipeline`` into the outputs until the source ends, a signal stops it, the
    recording fails or a live source gives up; the report says which."""
    recording = Recording(args, source.info, _stderr)
    frames = with_dets = n_dets = 0
    stopped_by, error = StopReason.END, None
    bar = None
    if not args.quiet:
        from tqdm import tqdm

        bar = tqdm(total=source.info.frame_count, desc="detect", unit="frame", file=sys.stderr, mininterval=1.0)
    started = time.perf_counter()
    with StopOnSignals(pipeline) as signals:
        pipeline.start()
        try:
            for result in pipeline.results(timeout=POLL_SECONDS):
                recording.write(result, pipeline, detector)
                pipeline.mark_shown(result)
                frames += 1
                with_dets += bool(len(result.shown))
                n_dets += len(result.shown)
                if bar is not None:
                    bar.update(1)
        except RecorderError as exc:
            stopped_by, error = StopReason.RECORDING_FAILED, str(exc)
        except SourceGaveUp as exc:
            stopped_by, error = StopReason.SOURCE_GAVE_UP, str(exc)
        finally:
            pipeline.stop()
            if bar is not None:
                bar.close()
            recording.close()
    if signals.received is not None and error is None and pipeline.cut_short:
        stopped_by = signals.received  # a signal after the last frame leaves a complete replay
    elapsed = time.perf_counter() - started
    counts = {"frames": frames, "frames_with_detections": with_dets, "detections": n_dets}
    return {**_report(pipeline, detector, args, elapsed, counts), "stopped_by": stopped_by.value, "error": error,
            "recording": recording.summary(), **source_report(source)}


def _report(pipeline: StreamPipeline, detector: Detector, args: argparse.Namespace, elapsed: float,
            counts: dict[str, int]) -> dict[str, Any]:
    lat = np.asarray(pipeline.stats.latencies_ms) if pipeline.stats.latencies_ms else np.zeros(1)
    snap = pipeline.stats.snapshot()
    return {
        "source": args.source,
        "model": str(args.model),
        "backend": detector.backend_name,
        "precision": detector.info.precision,
        "realtime": bool(args.realtime),
        "source_fps": pipeline.source.info.fps,
        "frames": counts["frames"],
        "dropped": pipeline.dropped,
        "fps": round(counts["frames"] / elapsed, 2) if elapsed > 0 else 0.0,
        "latency_ms": {"p50": round(float(np.percentile(lat, 50)), 2), "p99": round(float(np.percentile(lat, 99)), 2)},
        "inference_ms_p50": round(snap.inference_ms, 2),
        "frames_with_detections": counts["frames_with_detections"],
        "detections": counts["detections"],
        "conf": detector.conf,
        "conf_from": "command line" if args.conf is not None else (
            "model operating threshold" if detector.info.operating_threshold else "default"),
        "box_merge_iou": detector.merge_iou,
        "persistence": None if args.no_persistence else [args.persist_k, args.persist_n, args.persist_hold],
        "seconds": round(elapsed, 2),
    }


def source_report(source) -> dict[str, Any]:
    """What went wrong with the input, by kind of source: skipped image files, a video that
    ended before its header's frame count, a live source's outages."""
    skipped = getattr(source, "skipped", {})
    ended_early = getattr(source, "ended_early", None)
    outages = source.outage_stats() if hasattr(source, "outage_stats") else None
    return {
        "skipped_files": [{"file": name, "reason": why} for name, why in skipped.items()],
        "ended_early": asdict(ended_early) if ended_early else None,
        "outages": None if outages is None else {**asdict(outages),
                                                 "seconds_without_frames": round(outages.seconds_without_frames, 2)},
    }


# -- arguments ---------------------------------------------------------------------------
def _merge_iou(value: float) -> float:
    check_merge(value, DEFAULT_MERGE_SCORE_RATIO)
    return float(value)


def _checked(check: Callable[[float], float]) -> Callable[[str], float]:
    """An argparse ``type`` from a range check: its ValueError becomes argparse's one-line
    error, which names the flag."""

    def convert(text: str) -> float:
        try:
            return check(float(text))
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    return convert


def _positive_finite(value: float) -> float:
    if not (value > 0 and math.isfinite(value)):
        raise ValueError(f"must be a number > 0, got {value}")
    return value


def _give_up_after(text: str) -> float | None:
    if text.strip().lower() == NEVER:
        return None
    try:
        return _positive_finite(float(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number of seconds > 0 or '{NEVER}', got {text!r}") from None


def _int_at_least(minimum: int) -> Callable[[str], int]:
    def convert(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < minimum:
            raise argparse.ArgumentTypeError(f"must be a whole number >= {minimum}, got {text!r}")
        return value

    return convert


def add_detect_parser(sub: argparse._SubParsersAction, handler) -> None:
    p = sub.add_parser("detect", help="headless replay: annotated video, detections log, report",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("source", help="video file, image folder, camera index or /dev/videoN, or stream URL")
    p.add_argument("--model", required=True, help=".onnx, .engine or .safetensors")
    p.add_argument("--backend", default="auto", choices=BACKENDS,
                   help="auto (default) or one backend; onnxruntime: its best provider here (CUDA, else CPU)")
    p.add_argument("--out", help="annotated video (.avi survives a crash; .mp4 and .mkv are lost in one)")
    p.add_argument("--jsonl", help="detections log, one JSON line per frame (appended to)")
    p.add_argument("--report", help="summary report (JSON)")
    p.add_argument("--conf", type=_checked(check_conf), default=None,
                   help="score threshold in (0, 1) (default: the model's operating threshold, chosen on "
                        f"validation data, else {DEFAULT_CONF}; low values give full PR curves)")
    p.add_argument("--iou", type=_checked(check_iou), default=DEFAULT_IOU, help="NMS IoU threshold in (0, 1]")
    p.add_argument("--merge-iou", type=_checked(_merge_iou), default=None,
                   help="after NMS, move each box to the score-weighted mean of the candidates overlapping it by "
                        "more than this IoU (default: as the model was validated and shipped; 0: off)")
    p.add_argument("--realtime", action="store_true", help="pace a file at its own frame rate, like a live feed")
    p.add_argument("--fps", type=_checked(_positive_finite), default=25.0, help="frame rate of an image-folder source")
    p.add_argument("--threads", type=_int_at_least(0), default=0, help="inference threads (default 0: all cores)")
    p.add_argument("--no-sidecar", action="store_true",
                   help="load a TensorRT engine built elsewhere (trtexec, Polygraphy) that has no PolypScope sidecar; "
                        "nothing about it is checked (a warning says so)")
    p.add_argument("--give-up-after", type=_give_up_after, default=DEFAULT_GIVE_UP_AFTER, metavar="SECONDS",
                   help="camera or stream: stop (exit 1) after this long without frames; reconnection is tried "
                        f"meanwhile (default {DEFAULT_GIVE_UP_AFTER:g}; '{NEVER}': keep trying)")
    p.add_argument("--no-persistence", action="store_true", help="draw raw detections (no anti-flicker filter)")
    p.add_argument("--persist-k", type=_int_at_least(1), default=2, help="show a box once seen in k of the last n frames")
    p.add_argument("--persist-n", type=_int_at_least(1), default=3)
    p.add_argument("--persist-hold", type=_int_at_least(0), default=4,
                   help="keep a box this many frames after it was last seen")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(handler=handler)
