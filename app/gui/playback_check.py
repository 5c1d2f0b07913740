"""Play a clip through the real app window and report what its heads-up display measures.

    QT_QPA_PLATFORM=offscreen python -m app.gui.playback_check --source assets/demo/demo.mp4 \\
        --model assets/models/default.onnx --json-out docs/app-playback.json

The offscreen platform's screen is 800x800; ``--screen 1920x1080`` gives it another size
(through the plugin's configuration file), so the clinical view shows a 1080p frame 1:1 there
too. The report names the platform, the screen, the commit and how many frames the detector
ran on.

The numbers come from the pipeline's own per-frame timestamps (capture -> shown in the
window), so they include the GUI thread's drawing, unlike ``polypscope detect``. Display
FPS is sampled every half second over the HUD's 2-second window once playback has settled;
the report gives its median and minimum over the clip.

It is also the soak test of docs/realtime.md: every ``--memory-every`` seconds it records
the process's resident memory, the frames shown and dropped so far and the recent
latency p99, so a leak or a slow-down over an hour-long recording shows as a slope
(``--plot`` draws it). ``--fast`` plays a file as fast as the detector and the window go,
every frame shown, instead of at the file's own rate: thousands of frames in a minute.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

SETTLE_SECONDS = 2.0


def resident_mb() -> float | None:
    """This process's resident memory in MiB (Linux ``/proc``; ``None`` elsewhere)."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return None
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def measure(source: str, model: str, *, timeout: float = 300.0, settle_seconds: float = SETTLE_SECONDS,
            fast: bool = False, memory_every: float = 10.0, cpu_budget: Any = None, clinical: bool = False,
            window_size: tuple[int, int] = (1280, 800), max_detection_hz: int | None = None) -> dict[str, Any]:
    from PySide6.QtCore import QSettings
    from PySide6.QtWidgets import QApplication

    from app.gui.main_window import MainWindow, wait_until

    app = QApplication.instance() or QApplication(sys.argv[:1])
    with tempfile.TemporaryDirectory() as tmp:
        settings = QSettings(str(Path(tmp) / "s.ini"), QSettings.Format.IniFormat)
        if max_detection_hz is not None:
            settings.setValue("max_detection_hz", max_detection_hz)
        window = MainWindow(source, model, settings=settings, realtime=not fast, cpu_budget=cpu_budget,
                            clinical=clinical, review=False)  # playback only: no background analysis pass
        if not clinical:  # the clinical view takes the whole screen
            window.resize(*window_size)
            window.show()
        if not wait_until(lambda: window.frames_shown > 0, timeout=60):
            window.close()
            raise RuntimeError(f"{source}: no frame reached the window within {60} s")
        worker, info = window.worker, window.source.info
        started = time.monotonic()
        samples, timeline = [], []
        last_count, last_change, next_memory = 0, started, started
        stale_seen = False
        while time.monotonic() - started < timeout:
            stale_seen = stale_seen or window.view.stale
            # Qt runs for half a second, or until the clip has ended and its last frame is shown
            # (a stall, however long, is not mistaken for the end).
            if wait_until(lambda: not worker.running, timeout=0.5):
                wait_until(lambda: False, timeout=0.2)
                break
            now = time.monotonic()
            if window.frames_shown != last_count:
                last_count, last_change = window.frames_shown, now
            snap = worker.pipeline.stats.snapshot()
            if now - started > settle_seconds and now - last_change < 0.5:
                samples.append(snap.display_fps)
            if now >= next_memory:
                timeline.append({"t_s": round(now - started, 1), "frames_shown": window.frames_shown,
                                 "dropped": snap.dropped, "rss_mb": _round(resident_mb()),
                                 "latency_p99_ms": round(snap.latency_p99_ms, 2)})
                next_memory = now + memory_every
        report = _report(source, model, window, worker, info, samples, timeline, time.monotonic() - started)
        report["paced"] = not fast
        report["view"] = "clinical (full screen)" if clinical else "engineer"
        report["window_px"] = [window.view.width(), window.view.height()]
        report["stale_banner_seen"] = stale_seen
        report["max_detection_hz"] = window.detection_rate.value() or "every frame"
        report["frames_detected_on"] = worker.pipeline.stats.frames_inferred  # (the warm-up run not counted)
        screen = app.primaryScreen().geometry()
        report["qt_platform"] = app.platformName()
        report["screen_px"] = [screen.width(), screen.height()]
        report["commit"] = _commit()
        window.close()
    app.processEvents()
    return report


def _offscreen_screen(parser: argparse.ArgumentParser, size: str) -> None:
    """Give Qt's offscreen platform a screen of ``size`` (before the application starts)."""
    if os.environ.get("QT_QPA_PLATFORM", "").split(":")[0] != "offscreen":
        parser.error("--screen needs QT_QPA_PLATFORM=offscreen (a real display has its own size)")
    try:
        width, height = (int(v) for v in size.lower().split("x"))
    except ValueError:
        parser.error(f"--screen: expected WxH, e.g. 1920x1080, got {size!r}")
    config = Path(tempfile.mkdtemp(prefix="polypscope-screen-")) / "screen.json"
    config.write_text(json.dumps({"screens": [{"name": "screen", "x": 0, "y": 0, "width": width, "height": height}]}))
    os.environ["QT_QPA_PLATFORM"] = f"offscreen:configfile={config}"


def _commit() -> str | None:
    """The repository's commit (with "+changes" when the tree differs from it), or None
    outside a git checkout: a figure is only as good as knowing what code made it."""
    import subprocess

    root = Path(__file__).resolve().parents[2]
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True,
                              timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return head + ("+changes" if dirty else "")


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def _report(source: str, model: str, window, worker, info, samples: list[float], timeline: list[dict],
            seconds: float) -> dict[str, Any]:
    stats = worker.pipeline.stats
    snap = stats.snapshot()
    latencies = np.asarray(stats.latencies_ms)
    return {
        "source": source, "model": model, "backend": window.detector.backend_name if window.detector else None,
        "source_fps": info.fps, "source_frames": info.frame_count, "frames_shown": window.frames_shown,
        "dropped": snap.dropped, "dropped_by_stage": worker.pipeline.dropped_by_stage(), "seconds": round(seconds, 1),
        "display_fps": {"median": round(float(np.median(samples)), 2) if samples else 0.0,
                        "min": round(float(np.min(samples)), 2) if samples else 0.0, "samples": len(samples)},
        # over the last LATENCY_HISTORY frames (the whole clip when it is shorter)
        "latency_ms": {"p50": round(float(np.percentile(latencies, 50)), 2),
                       "p99": round(float(np.percentile(latencies, 99)), 2),
                       "max": round(float(latencies.max()), 2), "frames": int(latencies.size)},
        "inference_ms_median": round(snap.inference_ms, 2),
        "first_latencies_ms": [round(float(x), 1) for x in latencies[:5]],
        "memory": _memory_summary(timeline),
        "timeline": timeline,
    }


def _memory_summary(timeline: list[dict]) -> dict[str, Any]:
    """Resident memory at the start and end, its peak, and its trend over the second half
    of the run (MiB per hour; the first half includes the allocator settling)."""
    rows = [r for r in timeline if r["rss_mb"] is not None]
    if not rows:
        return {}
    t = np.array([r["t_s"] for r in rows])
    rss = np.array([r["rss_mb"] for r in rows])
    late = t >= t[-1] / 2
    slope = float(np.polyfit(t[late], rss[late], 1)[0] * 3600) if late.sum() >= 3 and np.ptp(t[late]) > 0 else None
    return {"start_mb": float(rss[0]), "end_mb": float(rss[-1]), "peak_mb": float(rss.max()),
            "second_half_trend_mb_per_hour": None if slope is None else round(slope, 1)}


def save_plot(report: dict[str, Any], path: Path) -> None:
    """Memory, latency p99 and dropped frames over the run, one panel each."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = report["timeline"]
    minutes = [r["t_s"] / 60 for r in rows]
    fig, axes = plt.subplots(3, 1, figsize=(8, 7), sharex=True)
    for ax, key, label in zip(axes, ("rss_mb", "latency_p99_ms", "dropped"),
                              ("resident memory (MiB)", "latency p99, recent frames (ms)", "dropped frames (total)")):
        ax.plot(minutes, [r[key] for r in rows], lw=1.2)
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[0].set_ylim(bottom=0)
    axes[-1].set_xlabel("minutes of playback")
    memory = report.get("memory") or {}
    memory_text = f"; memory {memory['start_mb']:.0f} -> {memory['end_mb']:.0f} MiB" if memory else ""
    fig.suptitle(f"{Path(report['source']).name}: {report['frames_shown']} frames shown, "
                 f"{report['dropped']} dropped, {report['seconds'] / 60:.0f} min{memory_text}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", required=True, help="a video file (played in real time unless --fast)")
    parser.add_argument("--model", required=True)
    parser.add_argument("--json-out", help="write the report here as JSON")
    parser.add_argument("--fast", action="store_true", help="play as fast as possible, every frame shown")
    parser.add_argument("--timeout", type=float, default=300.0, help="stop after this many seconds (default 300)")
    parser.add_argument("--memory-every", type=float, default=10.0, help="seconds between memory samples")
    parser.add_argument("--plot", help="write memory, latency and drops over time here (PNG; needs matplotlib)")
    parser.add_argument("--clinical", action="store_true", help="play in the clinical view (full screen)")
    parser.add_argument("--max-detection-rate", type=int, metavar="HZ",
                        help="detect at most this often on a real-time feed (0: every frame; default: the app's 30)")
    parser.add_argument("--window", default="1280x800", help="window size WxH of the engineer's view (default 1280x800)")
    parser.add_argument("--screen", metavar="WxH",
                        help="with QT_QPA_PLATFORM=offscreen: the size of its screen (default 800x800)")
    parser.add_argument("--cpu", choices=["app", "benchmark"], default="app",
                        help="how the cores are shared: app (default; app.cpu_budget) or benchmark (all inference "
                             "threads, spinning, OpenCV's own pool: the app before issue 13)")
    args = parser.parse_args()
    if args.screen:
        _offscreen_screen(parser, args.screen)
    from app.cpu_budget import BENCHMARK, app_budget

    budget = app_budget() if args.cpu == "app" else BENCHMARK
    try:
        window_size = tuple(int(v) for v in args.window.lower().split("x"))
        assert len(window_size) == 2
    except (ValueError, AssertionError):
        parser.error(f"--window: expected WxH, e.g. 1280x800, got {args.window!r}")
    report = measure(args.source, args.model, timeout=args.timeout, fast=args.fast, memory_every=args.memory_every,
                     cpu_budget=budget, clinical=args.clinical, window_size=window_size,
                     max_detection_hz=args.max_detection_rate)
    report["cpu_budget"] = budget.describe()
    text = json.dumps(report, indent=2)
    print(json.dumps({k: v for k, v in report.items() if k != "timeline"}, indent=2))
    if args.json_out:
        Path(args.json_out).write_text(text + "\n")
    if args.plot:
        save_plot(report, Path(args.plot))


if __name__ == "__main__":
    main()
