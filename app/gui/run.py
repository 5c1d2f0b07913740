"""``polypscope app`` and ``polypscope compare``: start the desktop windows."""

from __future__ import annotations

import argparse
import sys


def _application():
    from PySide6.QtWidgets import QApplication

    app = QApplication.instance() or QApplication(sys.argv[:1])
    app.setApplicationName("PolypScope")
    return app


def _quit_after(window, seconds: float | None) -> None:
    if seconds:
        from PySide6.QtCore import QTimer

        QTimer.singleShot(int(seconds * 1000), window.close)


def run_app(args: argparse.Namespace) -> int:
    app = _application()
    from app.gui.main_window import MainWindow

    window = MainWindow(args.source, args.model, backend=args.backend, clinical=args.clinical,
                        review=False if args.no_review else None)
    window.resize(1280, 860)
    if not args.clinical:
        window.show()
    _quit_after(window, args.quit_after)
    return app.exec()


def run_compare(args: argparse.Namespace) -> int:
    app = _application()
    from app.gui.compare_window import CompareWindow

    window = CompareWindow(args.video, args.model, args.model_b, backend=args.backend, conf_a=args.conf,
                           conf_b=args.conf_b)
    window.resize(1600, 860)
    window.show()
    _quit_after(window, args.quit_after)
    return app.exec()
