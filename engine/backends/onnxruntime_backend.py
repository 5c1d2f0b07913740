"""ONNX Runtime backend: CPU, CUDA or TensorRT execution providers.

Input and output are bound once (I/O binding) -- to fixed host buffers on the CPU, to device
buffers on CUDA (optionally with CUDA graphs) -- so a frame costs one ``run_with_iobinding``
call and no allocations.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from engine.backends.base import BackendUnavailable
from engine.model_info import ModelInfo, check_graph_io, expected_rows

PROVIDERS = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
}


def nvidia_driver_present() -> bool:
    """Whether the NVIDIA driver library loads; onnxruntime-gpu lists its CUDA provider
    even on machines without one, and then fails noisily when asked to use it."""
    import ctypes

    for name in ("libcuda.so.1", "nvcuda.dll"):
        try:
            ctypes.CDLL(name)
            return True
        except OSError:
            continue
    return False


class OnnxRuntimeBackend:
    """``device`` is "cpu", "cuda" or "tensorrt" (the ORT TensorRT provider, with CUDA and
    CPU as fall-backs for unsupported nodes). ``info`` must describe this graph: its input
    and output are checked against it (``ModelFormatError`` naming the file otherwise)."""

    def __init__(self, path: str | Path, info: ModelInfo, device: str = "cpu", threads: int = 0,
                 spin: bool = True, cuda_graph: bool = False) -> None:
        import onnxruntime as ort

        if device not in PROVIDERS:
            raise ValueError(f"unknown onnxruntime device {device!r}; use one of {sorted(PROVIDERS)}")
        wanted = PROVIDERS[device]
        if wanted not in ort.get_available_providers():
            raise BackendUnavailable(
                f"onnxruntime has no {wanted} here (available: {ort.get_available_providers()})"
            )
        if device != "cpu" and not nvidia_driver_present():
            raise BackendUnavailable("no NVIDIA driver on this machine (libcuda.so.1 cannot be loaded)")
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = threads or 0
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        if not spin:
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        if cuda_graph and device != "cuda":
            raise BackendUnavailable("CUDA graphs need the CUDA provider")
        self.session = ort.InferenceSession(str(path), options, providers=_provider_chain(device, path, cuda_graph))
        active = self.session.get_providers()
        if active[0] != wanted:
            raise BackendUnavailable(f"onnxruntime could not start {wanted} (it fell back to {active[0]})")
        check_graph_io(self.session, info, path)
        self.name = f"onnxruntime-{device}"
        self.info = info
        self._output = np.zeros((1, expected_rows(info), 5 + info.num_classes), np.float32)
        self._binding = self.session.io_binding()
        self._bound_input_id: tuple | None = None
        self._bound_input: np.ndarray | None = None  # keeps the bound buffer alive
        self._on_device = device != "cpu"
        if self._on_device:
            # Input and output live on the GPU, bound once (fixed addresses, which CUDA graphs
            # need): per frame one upload into the bound input, one download of the output;
            # onnxruntime no longer allocates and copies through its own staging buffers.
            size = info.input_size
            self._device_in = ort.OrtValue.ortvalue_from_shape_and_type((1, 3, size, size), np.float32, "cuda", 0)
            self._device_out = ort.OrtValue.ortvalue_from_shape_and_type(self._output.shape, np.float32, "cuda", 0)
            self._binding.bind_ortvalue_input(info.input_name, self._device_in)
            self._binding.bind_ortvalue_output(info.output_name, self._device_out)
        else:
            self._binding.bind_output(info.output_name, "cpu", 0, np.float32, self._output.shape,
                                      self._output.ctypes.data)

    def infer(self, tensor: np.ndarray) -> np.ndarray:
        if tensor.dtype != np.float32 or not tensor.flags.c_contiguous:
            tensor = np.ascontiguousarray(tensor, np.float32)
        if self._on_device:
            self._device_in.update_inplace(tensor)
            self.session.run_with_iobinding(self._binding)
            return self._device_out.numpy()
        # Re-bind only when the caller hands over a different buffer (normally never).
        if self._bound_input_id != (tensor.ctypes.data, tensor.shape):
            self._binding.bind_input(self.info.input_name, "cpu", 0, np.float32, tensor.shape, tensor.ctypes.data)
            self._bound_input_id = (tensor.ctypes.data, tensor.shape)
            self._bound_input = tensor
        self.session.run_with_iobinding(self._binding)
        return self._output

    def close(self) -> None:
        self.session = None  # type: ignore[assignment]


def _provider_chain(device: str, path: str | Path, cuda_graph: bool = False) -> list:
    """The provider list for ``device``, with fall-backs for nodes a provider cannot run."""
    if device == "cpu":
        return ["CPUExecutionProvider"]
    if device == "cuda":
        cuda = ("CUDAExecutionProvider", {"enable_cuda_graph": "1"}) if cuda_graph else "CUDAExecutionProvider"
        return [cuda, "CPUExecutionProvider"]
    cache = str(Path(path).with_suffix("")) + "_ort_trt_cache"
    os.makedirs(cache, exist_ok=True)
    trt_options = {"trt_fp16_enable": True, "trt_engine_cache_enable": True, "trt_engine_cache_path": cache,
                   "trt_timing_cache_enable": True}
    return [("TensorrtExecutionProvider", trt_options), "CUDAExecutionProvider", "CPUExecutionProvider"]

