"""Reviewing a recorded procedure: the per-frame detection timeline (cached beside the
video), events, the engineer's marks, the per-recording summary, A/B diffs and clip export.

No Qt here (the window in :mod:`app.gui.review` shows it) and no torch: a review runs on
the runtime path.
"""
