"""The TensorRT code against the real Python API of TensorRT 10.13 and 11.4.

The name lists come from NVIDIA's bindings wheels (``engine/trt_engine/api_names``); the
stand-in (``tests/fake_tensorrt.py``) refuses any name its version lacks. So every build
and run below fails the day the engine code touches a name a supported version does not
have -- such as ``BuilderFlag.FP16`` on 11."""

import sys
import zipfile

import cv2
import numpy as np
import pytest

from engine.model_info import sha256_file
from engine.trt_engine.api_surface import api_names, available_versions, has_name
from engine.trt_engine.build import BuildOptions, UnsupportedOnThisTensorRT, build_engine
from engine.trt_engine.engine_file import EngineMismatch, read_sidecar, sidecar_path

from .fake_tensorrt import make_modules
from .synthetic import draw_sample

VERSIONS = available_versions()
V10, V11 = "10.13.3.9", "11.4.0.106"
REMOVED_IN_11 = ("FP16", "int8_calibrator", "set_calibration_profile", "IInt8EntropyCalibrator2",
                 "IInt8Calibrator", "IInt8MinMaxCalibrator")


def test_the_vendored_lists_know_what_each_version_has():
    assert VERSIONS == [V10, V11]
    for version in VERSIONS:
        names = api_names(version)
        for known in ("Builder", "OnnxParser", "execute_async_v3", "set_tensor_address", "STRONGLY_TYPED", "INT8"):
            assert has_name(names, known), (version, known)
        assert not has_name(names, "get_binding_index")  # TensorRT 8's, gone since 10
    for name in REMOVED_IN_11:
        assert has_name(api_names(V10), name) and not has_name(api_names(V11), name), name
    # A short name can live only inside a longer string (the linker merges tails):
    assert "INT8" not in api_names(V11) and has_name(api_names(V11), "INT8")


def _wheel(tmp_path, so_strings: list[str], name="tensorrt_cu12_bindings-10.99.0-cp311-none-any.whl"):
    blob = b"\x00".join([b"\x7fELF", *[s.encode() for s in so_strings], b""])
    path = tmp_path / name
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("tensorrt_bindings/tensorrt.so", blob)
        zf.writestr("tensorrt_bindings/__init__.py", "__version__ = '10.99.0'\ndef nptype(t):\n    return t\n")
    return path


def test_extraction_reads_whole_strings_and_refuses_a_list_missing_known_names(tmp_path):
    from engine.trt_engine.extract_api import KNOWN_IN_EVERY_VERSION, extract, write_list

    strings = [n for n in KNOWN_IN_EVERY_VERSION if n not in ("__version__", "INT8")] + ["UINT8", "FP16",
                                                                                        "_ZN8nvinfer1mangled"]
    version, names = extract(_wheel(tmp_path, strings))
    assert version == "10.99.0" and {"FP16", "nptype", "__version__"} <= names
    assert not any(n.startswith("_Z") for n in names) and has_name(names, "INT8")
    out = write_list(_wheel(tmp_path, strings), tmp_path / "lists")
    assert out.name == "tensorrt-10.99.0.txt" and "FP16" in out.read_text().splitlines()
    with pytest.raises(ValueError, match="extraction found none of .*Builder"):
        extract(_wheel(tmp_path, [s for s in strings if s != "Builder"], name="tensorrt-11.0.0-x.whl"))


def test_a_removed_name_fails_on_the_version_that_removed_it(tiny_onnx):
    trt11 = make_modules(str(tiny_onnx), version=V11)[0]
    trt10 = make_modules(str(tiny_onnx), version=V10)[0]
    assert trt10.BuilderFlag.FP16 is not None and trt10.BuilderFlag.INT8 is not None
    with pytest.raises(AttributeError, match="11.4.0.106 has no attribute 'FP16'"):
        getattr(trt11.BuilderFlag, "FP16")  # noqa: B009 -- the access itself is the test
    with pytest.raises(AttributeError):
        getattr(trt11.BuilderFlag, "INT8")  # noqa: B009 -- the string lives on in DataType.INT8; the flag does not
    config = trt11.Builder(trt11.Logger(trt11.Logger.WARNING)).create_builder_config()
    with pytest.raises(AttributeError, match="int8_calibrator"):
        config.int8_calibrator = None
    assert not hasattr(trt11, "IInt8EntropyCalibrator2") and hasattr(trt10, "IInt8EntropyCalibrator2")


@pytest.fixture
def fakes(monkeypatch, tiny_onnx):
    """Install the stand-ins for one version; returns a function taking the version."""
    def install(version):
        trt, pycuda, cuda, rec = make_modules(str(tiny_onnx), version=version)
        monkeypatch.setitem(sys.modules, "tensorrt", trt)
        monkeypatch.setitem(sys.modules, "pycuda", pycuda)
        monkeypatch.setitem(sys.modules, "pycuda.driver", cuda)
        return trt, rec
    return install


@pytest.fixture(scope="module")
def calib_frames(tmp_path_factory):
    folder = tmp_path_factory.mktemp("calib") / "images"
    folder.mkdir()
    rng = np.random.default_rng(5)
    for i in range(6):
        cv2.imwrite(str(folder / f"t{i}.png"), draw_sample(rng, 120, 150)[0])
    return folder


def _frame():
    return draw_sample(np.random.default_rng(3), 200, 260)[0]


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_build_and_run_on_each_version_by_types(fakes, tiny_onnx, tmp_path, calib_frames, version, precision):
    from engine.detector import Detector

    _, rec = fakes(version)
    engine = tmp_path / "m.engine"
    side = build_engine(BuildOptions(tiny_onnx, engine, precision, calib=calib_frames))
    assert side.tensorrt_version == version and side.engine_sha256 == sha256_file(engine)
    strongly_typed = [c for c in rec.calls if c[0] == "create_network"][0][1][0]
    assert strongly_typed == 1 << 1  # NetworkDefinitionCreationFlag.STRONGLY_TYPED, no builder precision flags
    assert not [c for c in rec.calls if c[0] == "set_flag"]
    if precision != "fp32":
        assert side.built_from.endswith(f"m.{precision}.onnx")  # the typed ONNX the network came from
    trt_det = Detector(engine, "tensorrt", conf=0.05)
    ref_det = Detector(side.built_from if precision != "fp32" else tiny_onnx, "onnxruntime-cpu", conf=0.05)
    a, b = trt_det(_frame()), ref_det(_frame())
    assert len(a) == len(b) > 0
    np.testing.assert_allclose(a.boxes, b.boxes, atol=1e-3)
    trt_det.close()
    assert rec.contexts[-1].detached and rec.contexts[-1].depth == 0 and trt_det.backend.stream is None


def test_implicit_calibration_is_tensorrt_10_only_and_uses_the_network_batch(fakes, tiny_onnx, tmp_path, calib_frames):
    _, rec = fakes(V10)
    engine = tmp_path / "m.engine"
    build_engine(BuildOptions(tiny_onnx, engine, "int8-calibrated", calib=calib_frames))
    assert ("calibrated", (6, 1)) in rec.calls  # six images in six batches of one: the network's batch
    assert {repr(c[1][0]) for c in rec.calls if c[0] == "set_flag"} == {"BuilderFlag.FP16", "BuilderFlag.INT8"}
    from engine.precision.calibration import calibration_images, images_digest

    cache = BuildOptions(tiny_onnx, engine).calibration_cache(sha256_file(tiny_onnx),
                                                              images_digest(calibration_images(calib_frames)))
    assert cache.read_bytes() == b"calibration-table"  # keyed by the ONNX and by the frames
    fakes(V11)
    with pytest.raises(UnsupportedOnThisTensorRT, match="TensorRT 11.4.0.106.*--precision int8"):
        build_engine(BuildOptions(tiny_onnx, tmp_path / "n.engine", "int8-calibrated", calib=calib_frames))


def test_a_strongly_typed_network_refuses_precision_flags(fakes):
    trt, _ = fakes(V10)
    builder = trt.Builder(trt.Logger(trt.Logger.WARNING))
    network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    config = builder.create_builder_config()
    config.set_flag(trt.BuilderFlag.FP16)
    assert builder.build_serialized_network(network, config) is None


def test_dynamic_engines_have_a_shape_only_after_set_input_shape(fakes, tiny_checkpoint, tmp_path):
    from engine.detector import Detector
    from engine.export import export_onnx

    fakes(V11)
    onnx_path = export_onnx(tiny_checkpoint, tmp_path / "dyn.onnx", dynamic=True, check_images=None).path
    engine = tmp_path / "dyn.engine"
    side = build_engine(BuildOptions(onnx_path, engine, "fp32", max_batch=4))
    assert side.max_batch == 4
    det = Detector(engine, "tensorrt", conf=0.05)
    name = det.backend.input_name
    assert det.backend.engine.get_tensor_shape(name)[0] == -1  # the engine alone: dynamic
    assert tuple(det.backend.execution.get_tensor_shape(name))[0] == 1  # the context, after set_input_shape
    assert len(det(_frame())) > 0


def test_engine_and_sidecar_must_belong_together(fakes, tiny_onnx, tmp_path):
    from engine.detector import Detector

    fakes(V10)
    engine = tmp_path / "m.engine"
    build_engine(BuildOptions(tiny_onnx, engine, "fp32"))
    engine.write_bytes(engine.read_bytes() + b"\0")  # a new engine beside an old sidecar
    with pytest.raises(EngineMismatch, match="not the one its sidecar describes.*build-engine"):
        Detector(engine, "tensorrt")


def test_an_engine_without_sidecar_loads_only_when_asked_and_warns(fakes, tiny_onnx, tmp_path):
    from engine.detector import Detector

    fakes(V11)
    engine = tmp_path / "m.engine"
    build_engine(BuildOptions(tiny_onnx, engine, "fp32"))
    sidecar_path(engine).unlink()  # as trtexec would leave it
    with pytest.raises(EngineMismatch, match="no sidecar"):
        Detector(engine, "tensorrt")
    with pytest.warns(UserWarning, match="nothing about it was checked"):
        det = Detector(engine, "tensorrt", conf=0.05, no_sidecar=True)
    ref = Detector(tiny_onnx, "onnxruntime-cpu", conf=0.05)
    assert det.info.input_size == ref.info.input_size and det.info.num_classes == ref.info.num_classes
    np.testing.assert_allclose(det(_frame()).boxes, ref(_frame()).boxes, atol=1e-3)


def test_a_failed_allocation_releases_the_context_and_copies_are_size_checked(fakes, tiny_onnx, tmp_path, monkeypatch):
    from engine.backends import trt as trt_backend
    from engine.backends.base import BackendUnavailable

    _, rec = fakes(V10)
    engine = tmp_path / "m.engine"
    build_engine(BuildOptions(tiny_onnx, engine, "fp32"))

    def broken(self, trt):
        raise BackendUnavailable("no device memory")

    with monkeypatch.context() as m:
        m.setattr(trt_backend.TensorRTBackend, "_allocate", broken)
        with pytest.raises(BackendUnavailable, match="no device memory"):
            trt_backend.TensorRTBackend(engine)
    assert rec.contexts[-1].detached and rec.contexts[-1].depth == 0
    cuda = sys.modules["pycuda.driver"]
    buffer = cuda.mem_alloc(16)
    with pytest.raises(ValueError, match="16 device bytes"):
        cuda.memcpy_htod(buffer, np.zeros(8, np.float32))  # 32 bytes into 16: refused, not resized
    assert read_sidecar(engine).precision == "fp32"


def test_api_names_lists_are_what_the_extractor_writes():
    """The vendored lists start with the wheel they came from (reproducible with extract_api)."""
    for version in VERSIONS:
        from engine.trt_engine.api_surface import API_DIR

        first = (API_DIR / f"tensorrt-{version}.txt").read_text().splitlines()[0]
        assert first.startswith(f"# TensorRT {version} Python API names, extracted from tensorrt_cu1")
        assert "sha256" in first


def test_tensorrt_refuses_the_cpu_int8_copy_and_builds_the_tensorrt_one(fakes, tiny_onnx, tmp_path, calib_frames):
    """onnxruntime's CPU INT8 copy carries INT32 biases through DequantizeLinear and
    asymmetric activations, both of which TensorRT's parser refuses; the copy made for
    TensorRT keeps biases in float and activations symmetric."""
    from engine.precision.int8 import quantize_int8

    fakes(V11)
    cpu_copy = quantize_int8(tiny_onnx, tmp_path / "cpu.int8.onnx", calib_frames, target="cpu")
    with pytest.raises(RuntimeError, match="DequantizeLinear of INT32 is not supported|non-zero zero point"):
        build_engine(BuildOptions(cpu_copy, tmp_path / "a.engine", "int8"))
    trt_copy = quantize_int8(tiny_onnx, tmp_path / "trt.int8.onnx", calib_frames, target="tensorrt")
    assert build_engine(BuildOptions(trt_copy, tmp_path / "b.engine", "int8")).built_from == str(trt_copy)
