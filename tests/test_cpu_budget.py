"""The app's split of the cores between inference and the rest."""

import pytest

from app.cpu_budget import BENCHMARK, CpuBudget, app_budget


def test_the_app_leaves_a_core_for_capture_and_drawing_and_never_spins(monkeypatch):
    monkeypatch.delenv("POLYPSCOPE_INFERENCE_THREADS", raising=False)
    assert app_budget(2) == CpuBudget(1, spin=False, opencv_threads=0)  # OpenCV sequential
    assert app_budget(16) == CpuBudget(15, spin=False, opencv_threads=0)
    assert app_budget(1).inference_threads == 1
    assert BENCHMARK.spin and BENCHMARK.inference_threads == 0 and BENCHMARK.opencv_threads < 0  # OpenCV's pool
    assert "OpenCV default pool" in BENCHMARK.describe() and "sequential" in app_budget(2).describe()
    monkeypatch.setenv("POLYPSCOPE_INFERENCE_THREADS", "3")
    assert app_budget(2).inference_threads == 3
    monkeypatch.setenv("POLYPSCOPE_INFERENCE_THREADS", "many")
    with pytest.raises(ValueError, match="POLYPSCOPE_INFERENCE_THREADS='many'"):
        app_budget(2)


def test_the_window_opens_its_detector_with_the_budget(qtbot, tiny_onnx, tmp_path, monkeypatch):
    import cv2
    from PySide6.QtCore import QSettings

    from app.gui.main_window import MainWindow, wait_until

    monkeypatch.delenv("POLYPSCOPE_INFERENCE_THREADS", raising=False)
    before = cv2.getNumThreads()
    try:
        window = MainWindow(None, None, settings=QSettings(str(tmp_path / "s.ini"), QSettings.Format.IniFormat),
                            cpu_budget=CpuBudget(1, spin=False, opencv_threads=0))
        qtbot.addWidget(window)
        assert cv2.getNumThreads() == 1
        window.load_model(str(tiny_onnx))
        assert wait_until(lambda: window.detector is not None, timeout=30)
        session = window.detector.backend.session
        assert session.get_session_options().intra_op_num_threads == 1
        assert session.get_session_options().get_session_config_entry("session.intra_op.allow_spinning") == "0"
    finally:
        cv2.setNumThreads(before)
