import json
import subprocess
import sys

import cv2
import numpy as np
import pytest

from engine.backends.base import BackendUnavailable
from engine.benchmarks.latency import BenchTarget, bench_frame, run_bench
from engine.detector import Detector, open_backend
from engine.model_info import ModelFormatError

from .conftest import REPO, kvasir_root


def _frames(n=4):
    root = kvasir_root()
    if root:
        return [cv2.imread(str(p)) for p in sorted((root / "images").iterdir())[:n]]
    rng = np.random.default_rng(1)
    return [cv2.resize(rng.integers(0, 255, (20, 24, 3), dtype=np.uint8), (480, 400)) for _ in range(n)]


def test_onnxruntime_and_torch_backends_agree(tiny_checkpoint, tiny_onnx):
    ort_det = Detector(tiny_onnx, "onnxruntime-cpu", conf=0.05)
    torch_det = Detector(tiny_checkpoint, "torch", conf=0.05)
    assert ort_det.backend_name == "onnxruntime-cpu" and torch_det.backend_name == "torch-cpu"
    compared = 0
    for frame in _frames():
        a, b = ort_det(frame), torch_det(frame)
        assert len(a) == len(b)
        np.testing.assert_allclose(a.boxes, b.boxes, atol=0.05)
        np.testing.assert_allclose(a.scores, b.scores, atol=1e-4)
        compared += len(a)
        # Boxes are in frame pixels, inside the frame.
        h, w = frame.shape[:2]
        assert ((a.boxes[:, [0, 2]] >= 0) & (a.boxes[:, [0, 2]] <= w)).all()
        assert ((a.boxes[:, [1, 3]] >= 0) & (a.boxes[:, [1, 3]] <= h)).all()
    assert compared > 0, "the fixture model produced no detections to compare"
    t = ort_det.last_times
    assert t.preprocess > 0 and t.inference > 0 and t.total == pytest.approx(t.preprocess + t.inference + t.postprocess)


def test_auto_backend_explains_its_choice(tiny_onnx):
    backend, selection = open_backend(tiny_onnx, "auto")
    assert selection.chosen == "onnxruntime-cpu"
    assert "tensorrt" in selection.passed_over and "onnxruntime-cuda" in selection.passed_over
    assert "no TensorRT engine" in selection.passed_over["tensorrt"] or "not installed" in selection.passed_over["tensorrt"]
    assert selection.explain().startswith("backend: onnxruntime-cpu")


def test_unusable_models_are_refused(tmp_path, tiny_onnx):
    with pytest.raises(ModelFormatError, match="no such model file"):
        Detector(tmp_path / "nope.onnx")
    (tmp_path / "model.pt").write_bytes(b"x")
    with pytest.raises(ModelFormatError, match="unknown model type '.pt'"):
        Detector(tmp_path / "model.pt")
    with pytest.raises(BackendUnavailable, match="torch backend runs .safetensors"):
        Detector(tiny_onnx, "torch")


def test_tensorrt_backend_reports_missing_library(tiny_onnx, tmp_path):
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"\0" * 16)
    pytest.importorskip  # noqa: B018 - documentation: this runs where tensorrt is absent
    try:
        import tensorrt  # noqa: F401
        pytest.skip("tensorrt is installed here")
    except ImportError:
        pass
    with pytest.raises(BackendUnavailable, match="tensorrt package is not installed"):
        Detector(engine, "tensorrt")


def test_benchmark_report_fields(tiny_onnx, tiny_checkpoint):
    report = run_bench([BenchTarget(tiny_onnx, "onnxruntime-cpu"), BenchTarget(tiny_checkpoint, "torch")],
                       iterations=8, warmup=2, show_progress=False)
    assert report["frame"] == [1280, 1024]
    first, second = report["models"]
    for m in (first, second):
        assert set(m) >= {"model", "backend", "params", "gflops", "file_bytes", "latency_ms"}
        for stage in ("preprocess", "inference", "postprocess", "total"):
            p = m["latency_ms"][stage]
            assert 0 < p["p50"] <= p["p90"] <= p["p99"]
    assert first["params"] > 0 and first["file_bytes"] == tiny_onnx.stat().st_size
    assert report["ratio_p50"] == pytest.approx(
        first["latency_ms"]["total"]["p50"] / second["latency_ms"]["total"]["p50"], rel=1e-9)
    assert "ratio_inference_p50" in report
    assert report["onnxruntime_spinning"] is False  # interleaved sessions must not busy-wait
    assert bench_frame().shape == (1024, 1280, 3)


def test_performance_page_states_each_bar_from_the_right_run(tiny_onnx):
    from engine.benchmarks.report import render

    alone = run_bench([BenchTarget(tiny_onnx, "onnxruntime-cpu")], iterations=6, warmup=1, show_progress=False)
    pair = run_bench([BenchTarget(tiny_onnx, "onnxruntime-cpu")] * 2, iterations=6, warmup=1, show_progress=False)
    assert alone["onnxruntime_spinning"] is True and "ratio_p50" not in alone
    page = render(alone, pair, "make bench")
    assert "## The default model alone" in page and "## Side by side with the unpruned baseline" in page
    inference = alone["models"][0]["latency_ms"]["inference"]["p50"]
    assert f"| median inference of the default model | {inference:.2f} ms | <= 8.0 ms |" in page
    assert f"| {1 / pair['ratio_inference_p50']:.2f}x | >= 1.7x |" in page


BLOCK_TORCH = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch.") or name in ("models", "training"):
            raise ImportError(f"{name} is blocked: the runtime must not need it")
sys.meta_path.insert(0, Block())
"""


def test_runtime_runs_without_torch(tiny_onnx):
    code = BLOCK_TORCH + f"""
import json, numpy as np
import engine.detector, engine.benchmarks.latency, engine.backends.onnxruntime_backend, engine.backends.trt
import engine.trt_engine.build, engine.precision.calibration, engine.trt_engine.engine_file, app.cli
from engine.detector import Detector
det = Detector({str(tiny_onnx)!r})
dets = det(np.zeros((480, 640, 3), np.uint8))
print(json.dumps({{"backend": det.backend_name, "n": len(dets)}}))
"""
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1])["backend"] == "onnxruntime-cpu"
    helped = subprocess.run([sys.executable, "-c", BLOCK_TORCH + "import sys; sys.argv=['polypscope','--help']\n"
                             "from app.cli import main\ntry:\n    main()\nexcept SystemExit as e:\n    print('exit', e.code)"],
                            cwd=REPO, capture_output=True, text=True, timeout=60)
    assert "exit 0" in helped.stdout and "polypscope" in helped.stdout


def test_make_bench_keeps_the_sections_measured_elsewhere(tmp_path):
    from engine.benchmarks.report import KEEP_MARK, kept_sections

    page = tmp_path / "performance.md"
    assert kept_sections(page) == ""
    page.write_text("# Performance\nold tables\n" + KEEP_MARK + "\n## INT8 on this CPU\nrows\n")
    kept = kept_sections(page)
    assert kept.startswith("\n" + KEEP_MARK) and "## INT8 on this CPU\nrows" in kept and "old tables" not in kept
