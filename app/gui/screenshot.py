"""Screenshots of the app for the docs and the README, taken in a real window (run it under
``xvfb-run`` for a real X server; ``QT_QPA_PLATFORM=offscreen`` works too).

    xvfb-run -a -s "-screen 0 1920x1080x24" python -m app.gui.screenshot --view review \\
        --source assets/demo/demo.mp4 --model assets/models/default.onnx --out docs/app/review.png

Views:
  engineer  the main window playing the clip (HUD, settings)
  review    the main window once the clip is analysed: timeline strip, events panel with
            thumbnails; with --truth (the demo clip's demo.boxes.json) each event is marked
            polyp or false alarm by its peak box's overlap with the true box (IoU >= 0.3).
            The clip is copied to a temporary folder, so nothing is left beside it
  compare   the A/B window (--model-b), once both models have analysed the clip
  clinical  the full-screen clinical view; --stall adds a simulated feed stall, to show the
            not-live banner
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

VIEWS = ("engineer", "review", "compare", "clinical")


def _stall_after(window, frames: int) -> None:
    """Make the window's source stop delivering after ``frames`` frames (a lost feed)."""
    source = window.source
    read, stalled = source.read, threading.Event()

    def stalling_read():
        if window.frames_shown >= frames:
            stalled.wait(30)
        return read()

    source.read = stalling_read


def truth_label(truth: dict, frame: int, box) -> str:
    """polyp when ``box`` overlaps a true box of ``frame`` with IoU >= 0.3, else false alarm."""
    import numpy as np

    from engine.detections import box_iou

    rows = next((f["boxes"] for f in truth["frames"] if f["frame"] == frame), [])
    if not rows:
        return "false alarm"
    return "polyp" if box_iou(np.array([box], np.float32), np.array(rows, np.float32)).max() >= 0.3 else "false alarm"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", required=True, help="a video file")
    parser.add_argument("--model", required=True)
    parser.add_argument("--model-b", help="model B of the compare view")
    parser.add_argument("--view", choices=VIEWS, default="engineer")
    parser.add_argument("--out", required=True, help="PNG to write")
    parser.add_argument("--after-frames", type=int, default=120, help="frames to play before grabbing")
    parser.add_argument("--stall", action="store_true", help="clinical: stall the feed to show the banner")
    parser.add_argument("--conf", type=float, help="compare: both models' threshold (default: each one's own)")
    parser.add_argument("--truth", help="review: true boxes per frame (JSON like assets/demo/demo.boxes.json)")
    parser.add_argument("--size", default="1400x860", help="window size WxH (not the clinical view: full screen)")
    args = parser.parse_args()
    if args.view == "compare" and not args.model_b:
        parser.error("--view compare needs --model-b")
    from PySide6.QtCore import QSettings
    from PySide6.QtWidgets import QApplication

    from app.gui.main_window import MainWindow, wait_until

    app = QApplication.instance() or QApplication(sys.argv[:1])
    size = tuple(int(v) for v in args.size.split("x"))
    with tempfile.TemporaryDirectory() as tmp:
        source = str(shutil.copy(args.source, Path(tmp) / Path(args.source).name))
        settings = QSettings(str(Path(tmp) / "s.ini"), QSettings.Format.IniFormat)
        if args.view == "compare":
            from app.gui.compare_window import CompareWindow

            window = CompareWindow(source, args.model, args.model_b, conf_a=args.conf, conf_b=args.conf)
            window.resize(*size)
            window.show()
            ok = wait_until(lambda: window.diff is not None and window.frames_shown > 5, timeout=900)
            events = window.diff.only_a + window.diff.only_b + [a for a, _ in window.diff.matched] if ok else []
            if events:
                window.toggle_pause()
                window.seek(min(events, key=lambda e: e.start).peak_frame)
                wait_until(lambda: False, timeout=1.5)
        else:
            window = MainWindow(source, args.model, settings=settings, clinical=args.view == "clinical",
                                review=args.view == "review")
            if args.view != "clinical":
                window.resize(*size)
                window.show()
            ok = wait_until(lambda: window.frames_shown >= 5, timeout=120)
            if args.view == "review":
                ok = wait_until(lambda: window.review.timeline is not None, timeout=900)
                if args.truth:
                    import json

                    truth = json.loads(Path(args.truth).read_text())
                    for k, event in enumerate(window.review.events):
                        window.review.go_to(k)
                        window.review.mark_current(truth_label(truth, event.peak_frame, event.peak_box))
                wait_until(lambda: False, timeout=2.0)  # thumbnails
                window.toggle_pause()
                if window.review.events:
                    window.review.go_to(0)
                    window.seek(window.review.events[0].peak_frame)
                wait_until(lambda: False, timeout=1.0)
            else:
                if args.stall:
                    _stall_after(window, args.after_frames)
                ok = wait_until(lambda: window.frames_shown >= args.after_frames and window.last_result is not None
                                and len(window.last_result.shown) > 0, timeout=120)
                if args.stall:
                    time.sleep(0.1)
                    ok = wait_until(lambda: window.view.stale and window.view.age_s > 2.0, timeout=10)
        window.grab().save(args.out)
        window.close()
    app.processEvents()
    print(f"wrote {args.out}" + ("" if ok else " (the view was not ready when grabbed)"))


if __name__ == "__main__":
    main()
