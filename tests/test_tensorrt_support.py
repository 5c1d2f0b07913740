"""Everything around TensorRT that runs without a GPU: sidecars, compatibility checks,
calibration batches, build options. The GPU test at the end runs where TensorRT is."""

import dataclasses
import json

import cv2
import numpy as np
import pytest

from engine.model_info import read_onnx_info, sha256_file
from engine.precision.calibration import CalibrationBatches, CalibrationError, calibration_images
from engine.trt_engine.build import BuildOptions
from engine.trt_engine.engine_file import EngineMismatch, EngineSidecar, check_compatible, read_sidecar, write_sidecar


def _sidecar(onnx_path, **kw):
    base = dict(tensorrt_version="10.3.0", gpu_name="NVIDIA A100", compute_capability="8.0", precision="fp16",
                input_name="images", input_shape=[1, 3, 96, 96], max_batch=1, onnx_path=str(onnx_path),
                onnx_sha256=sha256_file(onnx_path), model_info=read_onnx_info(onnx_path).to_metadata())
    base.update(kw)
    return EngineSidecar(**base)


def test_sidecar_round_trip_and_model_info(tiny_onnx, tmp_path):
    engine = tmp_path / "m.engine"
    side = _sidecar(tiny_onnx)
    write_sidecar(engine, side)
    again = read_sidecar(engine)
    assert again == side
    assert again.info(engine) == read_onnx_info(tiny_onnx)
    assert json.loads((tmp_path / "m.engine.json").read_text())["precision"] == "fp16"


def test_compatibility_checks_name_the_difference_and_the_fix(tiny_onnx, tmp_path):
    side = _sidecar(tiny_onnx)
    ok = dict(tensorrt_version="10.3.0", gpu_name="NVIDIA A100", compute_capability="8.0")
    check_compatible("m.engine", side, **ok)
    with pytest.raises(EngineMismatch, match=r"built with TensorRT 10\.3\.0, this is TensorRT 10\.5\.0.*"
                                             r"polypscope build-engine --onnx .*tiny\.onnx --precision fp16"):
        check_compatible("m.engine", side, **{**ok, "tensorrt_version": "10.5.0"})
    with pytest.raises(EngineMismatch, match=r"built for NVIDIA A100 \(compute 8\.0\), this GPU is NVIDIA L4 \(compute 8\.9\)"):
        check_compatible("m.engine", side, **{**ok, "gpu_name": "NVIDIA L4", "compute_capability": "8.9"})
    changed = tmp_path / "changed.onnx"
    changed.write_bytes(tiny_onnx.read_bytes())
    stale = _sidecar(changed)
    changed.write_bytes(tiny_onnx.read_bytes() + b"\0")
    with pytest.raises(EngineMismatch, match="ONNX source .* has changed"):
        check_compatible("m.engine", stale, **ok)


def test_missing_or_corrupt_sidecar(tmp_path):
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"x")
    with pytest.raises(EngineMismatch, match="no sidecar m.engine.json.*rebuild it"):
        read_sidecar(engine)
    (tmp_path / "m.engine.json").write_text("{broken")
    with pytest.raises(EngineMismatch, match="sidecar is unreadable"):
        read_sidecar(engine)


def test_calibration_batches(tmp_path):
    folder = tmp_path / "calib" / "images"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(7):
        cv2.imwrite(str(folder / f"f{i}.png"), rng.integers(0, 255, (50 + i, 80, 3), dtype=np.uint8))
    (folder / "f7.png").write_bytes(b"broken")
    (tmp_path / "calib" / "val.txt").write_text("f0\nf1\nf2\nf3\nf4\nf7\n")
    files = calibration_images(tmp_path / "calib", split_file=tmp_path / "calib" / "val.txt")
    assert [f.stem for f in files] == ["f0", "f1", "f2", "f3", "f4", "f7"]
    batches = CalibrationBatches(files, 64, batch_size=2)
    out = list(batches)
    assert len(out) == 2 and all(b.shape == (2, 3, 64, 64) and b.dtype == np.float32 for b in out)
    assert batches.skipped == ["f7.png"]
    assert 0 <= out[0].min() and out[0].max() <= 1
    with pytest.raises(CalibrationError, match="no images to calibrate with"):
        calibration_images(tmp_path / "calib", split_file=_write(tmp_path / "none.txt", "zzz\n"))


def _write(path, text):
    path.write_text(text)
    return path


def test_build_options_validate(tmp_path, tiny_onnx):
    with pytest.raises(ValueError, match="INT8 needs --calib"):
        BuildOptions(onnx=tiny_onnx, out=tmp_path / "m.engine", precision="int8")
    with pytest.raises(ValueError, match="int8-calibrated needs --calib"):
        BuildOptions(onnx=tiny_onnx, out=tmp_path / "m.engine", precision="int8-calibrated")
    with pytest.raises(ValueError, match="m.onnx: not a readable ONNX model"):
        BuildOptions(onnx=tmp_path / "m.onnx", out=tmp_path / "m.engine", precision="int8")
    with pytest.raises(ValueError, match="precision must be one of"):
        BuildOptions(onnx=tmp_path / "m.onnx", out=tmp_path / "m.engine", precision="fp8")
    opts = BuildOptions(onnx=tmp_path / "m.onnx", out=tmp_path / "m.engine", precision="int8", calib=tmp_path)
    # Caches are keyed so they cannot be reused wrongly: timing by GPU, capability and
    # TensorRT version; calibration by the ONNX's checksum and the frames.
    assert opts.timing_cache("10.13.3.9", "NVIDIA H100 80GB HBM3", "9.0").name == \
        "timing-nvidia-h100-80gb-hbm3-cc9.0-trt10.13.3.9.cache"
    assert opts.timing_cache("11.4.0.106", "NVIDIA H100 80GB HBM3", "9.0") != opts.timing_cache("10.13.3.9", "NVIDIA H100 80GB HBM3", "9.0")
    assert opts.calibration_cache("ab" * 32, "0123456789ab").name == "m.calib-abababababababab-0123456789ab.cache"
    assert opts.typed_onnx().name == "m.int8.onnx"


@pytest.mark.gpu
def test_tensorrt_engine_matches_onnxruntime(tiny_onnx, tmp_path):
    pytest.importorskip("tensorrt")
    pytest.importorskip("pycuda")
    from engine.detector import Detector
    from engine.trt_engine.build import build_engine

    engine = tmp_path / "tiny.engine"
    build_engine(BuildOptions(onnx=tiny_onnx, out=engine, precision="fp32"))
    trt_det = Detector(engine, "tensorrt", conf=0.05)
    ort_det = Detector(tiny_onnx, "onnxruntime-cpu", conf=0.05)
    frame = np.random.default_rng(0).integers(0, 255, (400, 500, 3), dtype=np.uint8)
    a, b = trt_det(frame), ort_det(frame)
    assert len(a) == len(b)
    np.testing.assert_allclose(a.boxes, b.boxes, atol=0.5)


def _install_fakes(monkeypatch, onnx_path, **kw):
    import sys

    from .fake_tensorrt import make_modules

    trt, pycuda, cuda, rec = make_modules(str(onnx_path), **kw)
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    monkeypatch.setitem(sys.modules, "pycuda", pycuda)
    monkeypatch.setitem(sys.modules, "pycuda.driver", cuda)
    return rec


def _fake_engine(tmp_path, onnx_path, **sidecar):
    engine = tmp_path / "model.engine"
    engine.write_bytes(b"FAKE-ENGINE")
    write_sidecar(engine, _sidecar(onnx_path, tensorrt_version="10.13.3.9", gpu_name="Fake GPU",
                                   compute_capability="8.6", engine_sha256=sha256_file(engine), **sidecar))
    return engine


def test_tensorrt_data_path_binds_tensors_by_name(monkeypatch, tiny_onnx, tmp_path):
    """The native backend's buffers, copies and execute_async_v3 call, against stand-ins
    whose engine runs the same ONNX: detections must equal onnxruntime's."""
    _install_fakes(monkeypatch, tiny_onnx)
    from engine.detector import Detector

    engine = _fake_engine(tmp_path, tiny_onnx)
    trt_det = Detector(engine, "tensorrt", conf=0.05)
    ort_det = Detector(tiny_onnx, "onnxruntime-cpu", conf=0.05)
    # The same model info, with the engine's precision (from its sidecar) beside it.
    assert trt_det.backend_name == "tensorrt" and trt_det.info == dataclasses.replace(ort_det.info, precision="fp16")
    from .synthetic import draw_sample

    frame = draw_sample(np.random.default_rng(3), 200, 260)[0]
    a, b = trt_det(frame), ort_det(frame)
    assert len(a) == len(b) > 0
    np.testing.assert_allclose(a.boxes, b.boxes, atol=1e-3)
    trt_det.close()


def test_tensorrt_engine_for_another_gpu_is_refused(monkeypatch, tiny_onnx, tmp_path):
    _install_fakes(monkeypatch, tiny_onnx, gpu="NVIDIA L4", capability=(8, 9))
    from engine.detector import Detector, open_backend

    engine = _fake_engine(tmp_path, tiny_onnx)
    with pytest.raises(EngineMismatch, match="built for Fake GPU .* this GPU is NVIDIA L4.*build-engine"):
        Detector(engine, "tensorrt")
    # "auto" on the ONNX passes over the stale engine beside it, says why, and falls back.
    onnx_copy = tmp_path / "model.onnx"
    onnx_copy.write_bytes(tiny_onnx.read_bytes())
    backend, selection = open_backend(onnx_copy, "auto")
    assert selection.chosen == "onnxruntime-cpu"
    assert "this GPU is NVIDIA L4" in selection.passed_over["tensorrt"] and "rebuild" in selection.passed_over["tensorrt"]
