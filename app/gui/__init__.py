"""The PySide6 desktop app. The GUI thread only paints; streaming runs on worker threads."""
