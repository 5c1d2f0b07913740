"""Play a clip through the real app window and report what its heads-up display measures.

    QT_QPA_PLATFORM=offscreen python -m app.gui.playback_check --source assets/demo/demo.mp4 \\
        --model assets/models/default.onnx --json-out docs/app-playback.json

The numbers come from the pipeline's own per-frame timestamps (capture -> shown in the
window), so they include the GUI thread's drawing, unlike ``polypscope detect``. Display
FPS is sampled every half second over the HUD's 2-second window once playback has settled;
the report gives its median and minimum over the clip.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np


def measure(source: str, model: str, *, timeout: float = 300.0, settle_seconds: float = 2.0) -> dict[str, Any]:
    from PySide6.QtCore import QSettings
    from PySide6.QtWidgets import QApplication

    from app.gui.main_window import MainWindow, wait_until

    app = QApplication.instance() or QApplication(sys.argv[:1])
    with tempfile.TemporaryDirectory() as tmp:
        settings = QSettings(str(Path(tmp) / "s.ini"), QSettings.Format.IniFormat)
        window = MainWindow(source, model, settings=settings)
        window.resize(1280, 800)
        window.show()
        if not wait_until(lambda: window.frames_shown > 0, timeout=60):
            window.close()
            raise RuntimeError(f"{source}: no frame reached the window within 60 s")
        worker, info = window.worker, window.source.info
        started, samples, last_count, last_change = time.monotonic(), [], 0, time.monotonic()
        while time.monotonic() - started < timeout:
            wait_until(lambda: False, timeout=0.5)  # let Qt run for half a second
            now = time.monotonic()
            if window.frames_shown != last_count:
                last_count, last_change = window.frames_shown, now
            elif now - last_change > 2.0:
                break  # the clip has ended
            if now - started > settle_seconds and now - last_change < 0.5:
                samples.append(worker.pipeline.stats.snapshot().display_fps)
        stats = worker.pipeline.stats
        snap = stats.snapshot()
        latencies = np.asarray(stats.latencies_ms)
        report = {
            "source": source, "model": model, "backend": window.detector.backend_name if window.detector else None,
            "source_fps": info.fps, "source_frames": info.frame_count, "frames_shown": window.frames_shown,
            "dropped": snap.dropped,
            "display_fps": {"median": round(float(np.median(samples)), 2) if samples else 0.0,
                            "min": round(float(np.min(samples)), 2) if samples else 0.0, "samples": len(samples)},
            "latency_ms": {"p50": round(float(np.percentile(latencies, 50)), 2),
                           "p99": round(float(np.percentile(latencies, 99)), 2),
                           "max": round(float(latencies.max()), 2)},
            "inference_ms_median": round(snap.inference_ms, 2),
            "first_latencies_ms": [round(float(x), 1) for x in latencies[:5]],
            "slowest_frame": int(latencies.argmax()),
        }
        window.close()
    app.processEvents()
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", required=True, help="a video file (played in real time)")
    parser.add_argument("--model", required=True)
    parser.add_argument("--json-out", help="write the report here as JSON")
    args = parser.parse_args()
    report = measure(args.source, args.model)
    text = json.dumps(report, indent=2)
    print(text)
    if args.json_out:
        Path(args.json_out).write_text(text + "\n")


if __name__ == "__main__":
    main()
