"""``polypscope detect``: headless replay of a file, folder, camera or stream.

Writes any of: the annotated video (``--out``), a JSON-lines detections log
(``--jsonl``), and a report (``--report``) with frames, drops, FPS and capture-to-result
latency. ``--realtime`` paces a file at its own frame rate, as a live feed would arrive
(frames the model cannot keep up with are dropped and counted); without it every frame
is processed as fast as possible.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

import numpy as np

from app.overlay import HudInfo, draw_overlay
from app.streaming.persistence import PersistenceFilter, PersistenceSettings
from app.streaming.pipeline import StreamPipeline
from app.streaming.recorder import DetectionLog, VideoRecorder
from app.streaming.sources import open_source
from engine.atomic import atomic_write_text
from engine.detector import Detector


def run_detect(args: argparse.Namespace) -> int:
    source = open_source(args.source, realtime=args.realtime, folder_fps=args.fps,
                         on_status=lambda m: print(m, file=sys.stderr))
    detector = Detector(args.model, args.backend, conf=args.conf, iou=args.iou, threads=args.threads)
    print(detector.selection.explain(), file=sys.stderr)
    persistence = None if args.no_persistence else PersistenceFilter(
        PersistenceSettings(args.persist_k, args.persist_n, args.persist_hold))
    live = source.info.live or args.realtime
    pipeline = StreamPipeline(source, detector, lossless=not live, persistence=persistence)
    report = replay(pipeline, detector, args, source.info)
    if args.report:
        atomic_write_text(args.report, json.dumps(report, indent=2))
    summary = {k: report[k] for k in ("frames", "dropped", "fps", "frames_with_detections", "detections")}
    print(json.dumps({**summary, "latency_ms": report["latency_ms"]}))
    return 0


def replay(pipeline: StreamPipeline, detector: Detector, args: argparse.Namespace, info) -> dict[str, Any]:
    video = VideoRecorder(args.out, info.fps, (info.width, info.height)) if args.out else None
    log = DetectionLog(args.jsonl) if args.jsonl else None
    frames = with_dets = n_dets = 0
    bar = None
    if not args.quiet:
        from tqdm import tqdm

        bar = tqdm(total=info.frame_count, desc="detect", unit="frame", file=sys.stderr, mininterval=1.0)
    started = time.perf_counter()
    pipeline.start()
    try:
        for result in pipeline.results():
            shown = result.shown
            if video is not None:
                snap = pipeline.stats.snapshot()
                hud = HudInfo(snap.capture_fps, snap.inference_fps, snap.display_fps, snap.latency_p50_ms,
                              result.stage_ms[1], detector.backend_name)
                video.write(draw_overlay(result.frame.image, shown, detector.info.class_names, hud))
            if log is not None:
                log.write(result.frame.index, result.frame.position_ms, result.detections, result.frame.name)
            pipeline.mark_shown(result)
            frames += 1
            with_dets += bool(len(shown))
            n_dets += len(shown)
            if bar is not None:
                bar.update(1)
    finally:
        pipeline.stop()
        if bar is not None:
            bar.close()
        if video is not None:
            video.close()
        if log is not None:
            log.close()
    elapsed = time.perf_counter() - started
    lat = np.asarray(pipeline.stats.latencies_ms) if pipeline.stats.latencies_ms else np.zeros(1)
    snap = pipeline.stats.snapshot()
    return {
        "source": args.source,
        "model": str(args.model),
        "backend": detector.backend_name,
        "realtime": bool(args.realtime),
        "source_fps": info.fps,
        "frames": frames,
        "dropped": pipeline.dropped,
        "fps": round(frames / elapsed, 2) if elapsed > 0 else 0.0,
        "latency_ms": {"p50": round(float(np.percentile(lat, 50)), 2), "p99": round(float(np.percentile(lat, 99)), 2)},
        "inference_ms_p50": round(snap.inference_ms, 2),
        "frames_with_detections": with_dets,
        "detections": n_dets,
        "conf": args.conf,
        "persistence": None if args.no_persistence else [args.persist_k, args.persist_n, args.persist_hold],
        "seconds": round(elapsed, 2),
    }


def add_detect_parser(sub: argparse._SubParsersAction, handler) -> None:
    p = sub.add_parser("detect", help="headless replay: annotated video, detections log, report",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("source", help="video file, image folder, camera index or /dev/videoN, or stream URL")
    p.add_argument("--model", required=True, help=".onnx, .engine or .safetensors")
    p.add_argument("--backend", default="auto", help="auto, onnxruntime-cpu, onnxruntime-cuda, tensorrt, torch")
    p.add_argument("--out", help="annotated video (.avi survives a crash; .mp4 and .mkv also work)")
    p.add_argument("--jsonl", help="detections log, one JSON line per frame")
    p.add_argument("--report", help="summary report (JSON)")
    p.add_argument("--conf", type=float, default=0.25, help="score threshold (low values give full PR curves)")
    p.add_argument("--iou", type=float, default=0.45, help="NMS IoU threshold")
    p.add_argument("--realtime", action="store_true", help="pace a file at its own frame rate, like a live feed")
    p.add_argument("--fps", type=float, default=25.0, help="frame rate of an image-folder source")
    p.add_argument("--threads", type=int, default=0, help="inference threads (default: all cores)")
    p.add_argument("--no-persistence", action="store_true", help="draw raw detections (no anti-flicker filter)")
    p.add_argument("--persist-k", type=int, default=2, help="show a box once seen in k of the last n frames")
    p.add_argument("--persist-n", type=int, default=3)
    p.add_argument("--persist-hold", type=int, default=4, help="keep a box this many frames after it was last seen")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(handler=handler)
