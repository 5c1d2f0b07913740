"""The GPU path's parts that run on the CPU too: the letterbox in torch from the uint8 frame
matches OpenCV's, the prepared GPU benchmark runs up to the GPU and says where it stopped,
and the GPU-only options refuse the CPU clearly. The GPU figures come from a GPU lease."""

import json

import numpy as np
import pytest

from engine.preprocess import Preprocessor

from .synthetic import draw_sample


@pytest.mark.parametrize("shape", [(1024, 1280), (120, 150), (300, 200)])
def test_torch_letterbox_from_uint8_matches_opencv(shape):
    torch = pytest.importorskip("torch")
    from engine.benchmarks.gpu_letterbox import GpuLetterbox

    frame = draw_sample(np.random.default_rng(1), *shape)[0]
    cpu_tensor, cpu_box = Preprocessor(96)(frame)
    gpu_tensor, gpu_box = GpuLetterbox(96, device="cpu")(frame)
    assert gpu_box == cpu_box  # the same geometry: boxes map back identically
    assert gpu_tensor.shape == (1, 3, 96, 96) and gpu_tensor.dtype == torch.float32
    diff = np.abs(gpu_tensor.numpy() - cpu_tensor)
    assert diff.mean() < 4 / 255 and diff.max() < 0.25  # resampling details, a few grey levels on average
    # The padding is the letterbox grey, exactly.
    if cpu_box.top > 0:
        np.testing.assert_allclose(gpu_tensor[0, :, 0, 0].numpy(), np.full(3, 114 / 255), atol=1e-6)


def test_gpu_only_options_refuse_the_cpu(tiny_checkpoint, tiny_onnx):
    from engine.backends.base import BackendUnavailable
    from engine.backends.onnxruntime_backend import OnnxRuntimeBackend
    from engine.backends.torch_backend import TorchBackend
    from engine.model_info import read_onnx_info

    with pytest.raises(BackendUnavailable, match="need a CUDA device"):
        TorchBackend(tiny_checkpoint, "cpu", half=True)
    with pytest.raises(BackendUnavailable, match="CUDA graphs need the CUDA provider"):
        OnnxRuntimeBackend(tiny_onnx, read_onnx_info(tiny_onnx), "cpu", cuda_graph=True)


def test_the_prepared_gpu_benchmark_runs_what_the_cpu_can_and_says_where_it_stopped(tiny_checkpoint, tiny_onnx,
                                                                                     tmp_path):
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("a GPU is here: the benchmark would run for minutes")
    from engine.benchmarks.gpu import main

    out = tmp_path / "gpu.json"
    assert main(["--onnx", str(tiny_onnx), "--weights", str(tiny_checkpoint), "--out", str(out),
                 "--iterations", "5"]) == 0
    report = json.loads(out.read_text())
    assert "no CUDA device" in report["stopped_before"] and report["environment"]["cuda"] is False
    assert set(report["sections"]["preprocess"]) == {"cpu-opencv 1280x1024", "cpu-opencv 1920x1080"}
    assert report["sections"]["onnxruntime"]["cpu"]["p50"] > 0 and report["sections"]["torch"]["cpu fp32"]["p50"] > 0
