"""``polypscope bench``: per-stage latency percentiles, and fair side-by-side comparisons.

On a shared two-core machine, timings drift with whatever else runs, so two models are
never timed one after the other: with ``--vs`` they run interleaved, frame by frame, in one
process, and the ratio of their medians is the figure to trust.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from engine.detector import Detector, StageTimes

STAGES = ("preprocess", "inference", "postprocess", "total")
BENCH_FRAME_SIZE = (1280, 1024)  # (width, height): a typical endoscopy processor output


@dataclass
class BenchTarget:
    model: Path
    backend: str = "auto"


def bench_frame(source: Path | None = None, size: tuple[int, int] = BENCH_FRAME_SIZE) -> np.ndarray:
    """A 1280x1024 BGR frame: a real image resized when given, else smooth synthetic tissue."""
    w, h = size
    if source is not None:
        image = cv2.imread(str(source), cv2.IMREAD_COLOR)
        if image is None:
            raise ValueError(f"{source}: cannot read the benchmark frame")
        return cv2.resize(image, (w, h), interpolation=cv2.INTER_LINEAR)
    rng = np.random.default_rng(0)
    small = rng.integers(60, 200, (h // 32, w // 32, 3), dtype=np.uint8)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)


def percentiles(values: list[float]) -> dict[str, float]:
    arr = np.asarray(values)
    return {"p50": round(float(np.percentile(arr, 50)), 3), "p90": round(float(np.percentile(arr, 90)), 3),
            "p99": round(float(np.percentile(arr, 99)), 3)}


def _model_summary(det: Detector) -> dict[str, Any]:
    path = det.model_path
    return {"model": str(path), "backend": det.backend_name, "params": det.info.params,
            "gflops": det.info.gflops, "file_bytes": path.stat().st_size, "input_size": det.info.input_size}


def run_bench(targets: list[BenchTarget], *, iterations: int = 200, warmup: int = 20, threads: int = 0,
              frame: np.ndarray | None = None, show_progress: bool = True) -> dict[str, Any]:
    """Time every target on the same frame, interleaved; returns the JSON report."""
    frame = bench_frame() if frame is None else frame
    # Interleaved sessions must not busy-wait: one's spinning threads would slow the next.
    spin = len(targets) == 1
    detectors = [Detector(t.model, t.backend, threads=threads, warmup=warmup, spin=spin) for t in targets]
    times: list[list[StageTimes]] = [[] for _ in detectors]
    started = time.perf_counter()
    steps = range(iterations)
    if show_progress:
        from tqdm import tqdm

        steps = tqdm(steps, desc="bench", mininterval=1.0)
    for _ in steps:
        for i, det in enumerate(detectors):
            det(frame)
            times[i].append(det.last_times)
    elapsed = time.perf_counter() - started
    models = []
    for det, samples in zip(detectors, times):
        latency = {stage: percentiles([getattr(s, stage) for s in samples]) for stage in STAGES}
        mean_total = float(np.mean([s.total for s in samples]))
        models.append({**_model_summary(det), "latency_ms": latency,
                       "throughput_fps": round(1000.0 / mean_total, 2),
                       "selection": det.selection.explain()})
        det.close()
    report: dict[str, Any] = {
        "frame": list(frame.shape[1::-1]),
        "iterations": iterations,
        "threads": threads or os.cpu_count(),
        "onnxruntime_spinning": spin,
        "wall_seconds": round(elapsed, 2),
        "models": models,
    }
    if len(models) == 2:
        a, b = models
        report["ratio_p50"] = a["latency_ms"]["total"]["p50"] / b["latency_ms"]["total"]["p50"]
        report["ratio_inference_p50"] = a["latency_ms"]["inference"]["p50"] / b["latency_ms"]["inference"]["p50"]
    return report


def format_report(report: dict[str, Any]) -> str:
    lines = [f"frame {report['frame'][0]}x{report['frame'][1]}, {report['iterations']} iterations, "
             f"{report['threads']} threads"]
    header = f"{'model':<34} {'backend':<17} " + " ".join(f"{s + ' p50/p99':>20}" for s in STAGES)
    lines.append(header)
    for m in report["models"]:
        cells = " ".join(f"{m['latency_ms'][s]['p50']:>9.2f}/{m['latency_ms'][s]['p99']:<9.2f}" + " "
                         for s in STAGES)
        lines.append(f"{Path(m['model']).name:<34} {m['backend']:<17} {cells}")
    if "ratio_p50" in report:
        lines.append(f"ratio of medians (first / second): total {report['ratio_p50']:.3f}, "
                     f"inference {report['ratio_inference_p50']:.3f}")
    return "\n".join(lines)
