"""``polypscope app``: start the desktop app."""

from __future__ import annotations

import argparse
import sys


def run_app(args: argparse.Namespace) -> int:
    from PySide6.QtWidgets import QApplication

    from app.gui.main_window import MainWindow

    app = QApplication.instance() or QApplication(sys.argv[:1])
    app.setApplicationName("PolypScope")
    window = MainWindow(args.source, args.model, backend=args.backend)
    window.resize(1280, 860)
    window.show()
    if args.quit_after:
        from PySide6.QtCore import QTimer

        QTimer.singleShot(int(args.quit_after * 1000), window.close)
    return app.exec()
