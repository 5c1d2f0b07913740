"""The confidence threshold a user chose, remembered for the model it was chosen for.

A model carries its own operating threshold, chosen on validation and written into its
metadata at export (val recall 0.90 for the shipped default). A threshold the user sets with
the slider replaces it for that model, now and next time, and for no other: a value tuned
once for an old model must not silently replace a new model's validated operating point.
Models are told apart by the content of the file (SHA-256), not its path, so a re-exported
model at the same path starts again from its own threshold.
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QSettings

from engine.model_info import sha256_file

LEGACY_GLOBAL_KEY = "conf"  # before session 15 one threshold served every model
GROUP = "thresholds"        # not under "conf/": removing the legacy key removes that group too


def threshold_key(model_path: str | Path) -> str:
    """The settings key of the threshold chosen for this model file (reads the whole file:
    compute it once per model load, not per slider step)."""
    return f"{GROUP}/{sha256_file(model_path)[:16]}"


class ThresholdMemory:
    """Per-model thresholds in ``QSettings``, in hundredths (the slider's unit), by the key
    :func:`threshold_key` gives a model file."""

    def __init__(self, settings: QSettings) -> None:
        self.settings = settings
        if settings.contains(LEGACY_GLOBAL_KEY):  # it belonged to whichever model was loaded then
            settings.remove(LEGACY_GLOBAL_KEY)

    def chosen(self, key: str | None) -> float | None:
        """The threshold chosen under ``key``, or ``None`` (use the model's own)."""
        if key is None or not self.settings.contains(key):
            return None
        return self.settings.value(key, type=int) / 100

    def choose(self, key: str, hundredths: int) -> None:
        self.settings.setValue(key, int(hundredths))

    def forget(self, key: str) -> None:
        self.settings.remove(key)
