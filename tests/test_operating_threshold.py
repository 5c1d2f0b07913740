"""The operating threshold chosen on val travels checkpoint -> ONNX -> Detector -> detect."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from engine.detector import Detector
from engine.export import export_onnx
from engine.model_info import read_onnx_info
from engine.postprocess import DEFAULT_CONF
from models import load_checkpoint, save_checkpoint

from .conftest import REPO
from .synthetic import write_moving_clip


@pytest.fixture(scope="module")
def thresholded(tiny_checkpoint, tmp_path_factory):
    ckpt = load_checkpoint(tiny_checkpoint)
    folder = tmp_path_factory.mktemp("op")
    path = save_checkpoint(folder / "op.safetensors", ckpt.model,
                           {**ckpt.metadata, "operating_threshold": 0.137})
    onnx_path = folder / "op.onnx"
    export_onnx(path, onnx_path, check_images=None)
    return path, onnx_path


def test_export_writes_it_and_every_backend_uses_it_by_default(thresholded, tiny_onnx):
    weights, onnx_path = thresholded
    assert read_onnx_info(onnx_path).operating_threshold == pytest.approx(0.137)
    for model in (onnx_path, weights):  # onnxruntime reads the ONNX metadata, torch the checkpoint's
        detector = Detector(model, warmup=0)
        assert detector.conf == pytest.approx(0.137)
        detector.close()
    asked = Detector(onnx_path, conf=0.5, warmup=0)
    assert asked.conf == 0.5  # an explicit threshold wins
    asked.close()
    plain = Detector(tiny_onnx, warmup=0)
    assert plain.info.operating_threshold is None and plain.conf == DEFAULT_CONF
    plain.close()


def test_detect_reports_the_threshold_it_used(thresholded, tmp_path):
    _, onnx_path = thresholded
    clip = write_moving_clip(tmp_path / "clip.avi", frames=5, size=(96, 96))
    for extra, conf, source in (([], 0.137, "model operating threshold"), (["--conf", "0.4"], 0.4, "command line")):
        report = tmp_path / f"report{len(extra)}.json"
        proc = subprocess.run([sys.executable, "-m", "app", "detect", str(clip), "--model", str(onnx_path),
                               "--report", str(report), *extra], cwd=REPO, capture_output=True, text=True,
                              timeout=300)
        assert proc.returncode == 0, proc.stderr
        data = json.loads(report.read_text())
        assert data["conf"] == pytest.approx(conf) and data["conf_from"] == source


def test_the_app_uses_the_model_threshold_until_the_user_chooses_one(qtbot, thresholded, tiny_onnx, tmp_path):
    pytest.importorskip("PySide6.QtWidgets")
    from PySide6.QtCore import QSettings

    from app.gui.main_window import MainWindow
    from app.gui.threshold_memory import threshold_key

    _, onnx_path = thresholded
    settings = QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat)
    win = MainWindow(None, str(onnx_path), settings=settings, backend="onnxruntime-cpu")
    qtbot.addWidget(win)
    qtbot.waitUntil(lambda: win.detector is not None, timeout=30000)
    assert win.detector.conf == pytest.approx(0.137)  # exact, though the slider shows 0.14
    assert win.conf_slider.value() == 14 and not settings.contains("conf")
    win.iou_slider.setValue(50)  # another setting: the model's threshold stays
    assert win.detector.conf == pytest.approx(0.137) and win.detector.iou == 0.5 and not settings.contains("conf")
    assert "operating threshold" in win.conf_source.text() and not win.conf_reset.isEnabled()
    win.conf_slider.setValue(30)  # the user's choice replaces it, for this model, now and next time
    assert win.detector.conf == pytest.approx(0.30) and int(settings.value(threshold_key(onnx_path))) == 30
    assert "your choice" in win.conf_source.text() and win.conf_reset.isEnabled()
    win.close()
    again = MainWindow(None, str(onnx_path), settings=settings, backend="onnxruntime-cpu")
    qtbot.addWidget(again)
    qtbot.waitUntil(lambda: again.detector is not None, timeout=30000)
    assert again.detector.conf == pytest.approx(0.30)
    # Another model does not inherit it: it comes with its own threshold (here none: 0.25).
    again.load_model(str(tiny_onnx))
    qtbot.waitUntil(lambda: again.detector.model_path == Path(tiny_onnx), timeout=30000)
    assert again.detector.conf == DEFAULT_CONF and "generic default" in again.conf_source.text()
    again.load_model(str(onnx_path))  # back to the first model: its choice, until reset
    qtbot.waitUntil(lambda: again.detector.model_path == Path(onnx_path), timeout=30000)
    assert again.detector.conf == pytest.approx(0.30)
    again.conf_reset.click()
    assert again.detector.conf == pytest.approx(0.137) and not settings.contains(threshold_key(onnx_path))
    again.close()
    # A threshold saved by an older version, for whichever model was loaded then, is dropped;
    # the choices made per model stay.
    settings.setValue(threshold_key(tiny_onnx), 40)
    settings.setValue("conf", 60)
    third = MainWindow(None, str(onnx_path), settings=settings, backend="onnxruntime-cpu")
    qtbot.addWidget(third)
    assert not third.conf_slider.isEnabled() and not third.conf_reset.isEnabled()  # no model yet: nothing to set
    qtbot.waitUntil(lambda: third.detector is not None, timeout=30000)
    assert third.detector.conf == pytest.approx(0.137) and not settings.contains("conf")
    assert int(settings.value(threshold_key(tiny_onnx))) == 40 and third.conf_slider.isEnabled()
    third.close()
