"""Grab a screenshot of the app playing a clip (for the README), offscreen if need be.

    QT_QPA_PLATFORM=offscreen python -m app.gui.screenshot --source assets/demo/demo.mp4 \\
        --model assets/models/default.onnx --out docs/screenshot.png
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--after-frames", type=int, default=120, help="frames to play before grabbing")
    args = parser.parse_args()
    from PySide6.QtCore import QSettings
    from PySide6.QtWidgets import QApplication

    from app.gui.main_window import MainWindow, wait_until

    app = QApplication.instance() or QApplication(sys.argv[:1])
    with tempfile.TemporaryDirectory() as tmp:
        settings = QSettings(str(Path(tmp) / "s.ini"), QSettings.Format.IniFormat)
        window = MainWindow(args.source, args.model, settings=settings)
        window.resize(1280, 800)
        window.show()
        ok = wait_until(lambda: window.frames_shown >= args.after_frames and window.last_result is not None
                        and len(window.last_result.shown) > 0, timeout=120)
        window.grab().save(args.out)
        window.close()
    app.processEvents()
    print(f"wrote {args.out}" + ("" if ok else " (no detection was on screen when grabbed)"))


if __name__ == "__main__":
    main()
