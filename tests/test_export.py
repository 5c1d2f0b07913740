import subprocess
import sys

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from engine.export import ExportError, export_onnx, verify_parity, write_triton_repository
from engine.model_info import ModelFormatError, read_onnx_info
from models import load_checkpoint

from .conftest import REPO, kvasir_root


def test_onnx_has_metadata_decoding_and_static_batch(tiny_checkpoint, tiny_onnx):
    model = onnx.load(str(tiny_onnx))
    onnx.checker.check_model(model, full_check=True)
    assert model.opset_import[0].version >= 17
    info = read_onnx_info(tiny_onnx)
    ckpt = load_checkpoint(tiny_checkpoint)
    assert info.class_names == ("polyp",) and info.input_size == 96
    assert info.anchors == ckpt.config.anchors and info.letterbox_colour == (114, 114, 114)
    assert info.params > 0 and info.gflops > 0
    import hashlib

    assert info.source_sha256 == hashlib.sha256(tiny_checkpoint.read_bytes()).hexdigest()
    session = ort.InferenceSession(str(tiny_onnx), providers=["CPUExecutionProvider"])
    (inp,), (out,) = session.get_inputs(), session.get_outputs()
    assert inp.shape == [1, 3, 96, 96]
    rows = 3 * ((96 // 8) ** 2 + (96 // 16) ** 2 + (96 // 32) ** 2)
    assert out.shape == [1, rows, 6]


def test_parity_with_torch_on_frames(tiny_checkpoint, tiny_onnx, tmp_path):
    root = kvasir_root()
    frames = sorted((root / "images").iterdir())[:4] if root else []
    report = verify_parity(load_checkpoint(tiny_checkpoint).model, tiny_onnx, read_onnx_info(tiny_onnx), frames)
    assert report.max_abs_diff < 1e-4 and report.same_detections
    assert report.images == (len(frames) or 4)


def test_parity_failure_is_reported(tiny_checkpoint, tiny_onnx):
    model = load_checkpoint(tiny_checkpoint).model
    with torch.no_grad():
        model.heads[0].out.conv.bias += 1.0  # the torch model no longer matches the file
    with pytest.raises(ExportError, match="onnxruntime differs from torch"):
        verify_parity(model, tiny_onnx, read_onnx_info(tiny_onnx), [])


def test_dynamic_batch_and_triton_repository(tiny_checkpoint, tmp_path):
    out = export_onnx(tiny_checkpoint, tmp_path / "dyn.onnx", dynamic=True, check_images=None)
    session = ort.InferenceSession(str(out.path), providers=["CPUExecutionProvider"])
    batch = np.random.default_rng(0).random((3, 3, 96, 96), dtype=np.float32)
    result = session.run(None, {"images": batch})[0]
    single = session.run(None, {"images": batch[1:2]})[0]
    assert result.shape[0] == 3
    # Relative as well as absolute: decoded boxes reach a few hundred pixels, where 1e-4 is
    # only a few float32 ulps, and batching may change a kernel's summation order.
    np.testing.assert_allclose(result[1:2], single, rtol=1e-5, atol=1e-4)
    repo = write_triton_repository(out.path, out.info, tmp_path / "triton", max_batch=8)
    config = (repo / "config.pbtxt").read_text()
    assert 'platform: "onnxruntime_onnx"' in config and "max_batch_size: 8" in config
    assert "dims: [ 3, 96, 96 ]" in config and "dynamic_batching" in config
    assert (repo / "1" / "model.onnx").read_bytes() == out.path.read_bytes()


def test_foreign_onnx_is_refused(tmp_path):
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    path = tmp_path / "other.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9), str(path))
    with pytest.raises(ModelFormatError, match="other.onnx: not a PolypScope model"):
        read_onnx_info(path)
    (tmp_path / "junk.onnx").write_bytes(b"not onnx at all")
    with pytest.raises(ModelFormatError, match="junk.onnx: not a readable ONNX model"):
        read_onnx_info(tmp_path / "junk.onnx")


def test_export_command_line(tiny_checkpoint, tmp_path):
    out = tmp_path / "cli.onnx"
    proc = subprocess.run([sys.executable, "-m", "app", "export", "--weights", str(tiny_checkpoint),
                           "--out", str(out)], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "parity with torch" in proc.stdout and out.is_file()
    bad = subprocess.run([sys.executable, "-m", "app", "export", "--weights", str(tmp_path / "missing.safetensors")],
                         cwd=REPO, capture_output=True, text=True, timeout=120)
    assert bad.returncode != 0 and "missing.safetensors: no such checkpoint file" in bad.stderr
