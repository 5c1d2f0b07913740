"""Faults that only show after minutes of playback, caught in seconds.

PySide6-Essentials 6.12.0 on Python 3.11 dropped one reference to a Python singleton
(True, False or None) on every ``SignalInstance.emit()``, receiver or not; after some
thousands of frames the singleton's count reached zero and the interpreter aborted
("Fatal Python error: none_dealloc"), about 30 s into any video. The 16-second demo clip
was too short to show it. These tests emit the app's own signals many thousands of times
and count references, and push thousands of frames through the real window, so that no
dependency upgrade can bring such a crash back unseen.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("PySide6.QtWidgets")

from .conftest import REPO  # noqa: E402
from .synthetic import write_moving_clip  # noqa: E402

EMITS = 20_000

# Runs in a child process: a refcount bug aborts the interpreter, which must fail this
# test with the child's message rather than kill the whole test session.
EMIT_SCRIPT = textwrap.dedent(f"""
    import json, sys
    from PySide6.QtCore import QCoreApplication, QObject, Qt, Signal
    from PySide6.QtGui import QImage
    from app.gui.worker import StreamWorker

    app = QCoreApplication([])
    worker = StreamWorker(None, ("polyp",), "test")   # the app's real signals
    received = []
    worker.status.connect(received.append, Qt.ConnectionType.DirectConnection)
    payload = object()
    image = QImage(8, 8, QImage.Format.Format_RGB888)
    singletons = {{"None": None, "True": True, "False": False}}

    def counts():
        return {{name: sys.getrefcount(obj) for name, obj in singletons.items()}} | {{"payload": sys.getrefcount(payload)}}

    before = counts()
    for i in range({EMITS}):
        worker.frame_ready.emit(image, payload, None)   # no receiver connected
        worker.frame_ready.emit(image, True, False)
        worker.status.emit("x")                          # a direct receiver
        worker.finished.emit()
    received.clear()
    after = counts()
    print(json.dumps({{"before": before, "after": after}}))
""")


def test_emitting_signals_leaves_reference_counts_unchanged():
    """Three signals, 80 000 emits: every singleton's count may move by a few (other code
    runs), never by anything of the order of the emit count. On Python 3.12+ the
    singletons are immortal and their counts fixed; the payload object still counts."""
    run = subprocess.run([sys.executable, "-c", EMIT_SCRIPT], cwd=REPO, capture_output=True, text=True,
                         timeout=300, env={**os.environ, "QT_QPA_PLATFORM": "offscreen"})
    assert run.returncode == 0, f"emitting Qt signals crashed the interpreter:\n{run.stderr[-2000:]}"
    counts = json.loads(run.stdout.strip().splitlines()[-1])
    for name, before in counts["before"].items():
        assert abs(counts["after"][name] - before) < 50, f"{name}: {before} -> {counts['after'][name]} references"


@pytest.fixture
def long_clip(tmp_path):
    """3000 frames (two minutes at 25 fps) of a small moving synthetic scene."""
    return write_moving_clip(tmp_path / "long.avi", 3000, size=(96, 128), seed=1, shift_every=1)


@pytest.mark.slow
def test_thousands_of_frames_through_the_real_window(qtbot, tiny_onnx, long_clip):
    """Every frame of a two-minute clip reaches the window (unpaced, so it takes seconds),
    none dropped, and the process's memory does not grow with the frames shown."""
    from app.gui.playback_check import measure

    report = measure(str(long_clip), str(tiny_onnx), timeout=240, fast=True, memory_every=1.0)
    assert report["source_frames"] == 3000
    assert report["frames_shown"] == 3000 and report["dropped"] == 0
    memory = report["memory"]
    if memory:  # Linux: /proc tells resident memory
        assert memory["end_mb"] - memory["start_mb"] < 50, memory
