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


def threshold_key(model_path: str | Path) -> str:
    """The settings key of the threshold chosen for this model file."""
    return f"conf/{sha256_file(model_path)[:16]}"


class ThresholdMemory:
    """Per-model thresholds in ``QSettings``, in hundredths (the slider's unit)."""

    def __init__(self, settings: QSettings) -> None:
        self.settings = settings
        self._keys: dict[tuple[str, int, int], str] = {}  # a slider drag must not hash the model each step
        if settings.contains(LEGACY_GLOBAL_KEY):  # it belonged to whichever model was loaded then
            settings.remove(LEGACY_GLOBAL_KEY)

    def chosen(self, model_path: str | Path) -> float | None:
        """The threshold the user chose for this model, or ``None`` (use the model's own)."""
        try:
            key = self._key(model_path)
        except OSError:
            return None  # loading the model will report the file's problem
        return self.settings.value(key, type=int) / 100 if self.settings.contains(key) else None

    def choose(self, model_path: str | Path, hundredths: int) -> None:
        self.settings.setValue(self._key(model_path), int(hundredths))

    def forget(self, model_path: str | Path) -> None:
        self.settings.remove(self._key(model_path))

    def _key(self, model_path: str | Path) -> str:
        stat = Path(model_path).stat()
        ident = (str(Path(model_path).resolve()), stat.st_mtime_ns, stat.st_size)
        if ident not in self._keys:
            self._keys[ident] = threshold_key(model_path)
        return self._keys[ident]
