"""Native TensorRT backend (TensorRT 10 and 11 Python API + pycuda). The only module that imports
``tensorrt`` or ``pycuda``, and only when a TensorRT backend is actually created.

The engine is deserialised once; input and output live in page-locked host buffers and
device buffers allocated once; each frame is one async host-to-device copy,
``execute_async_v3`` on a private CUDA stream, one async device-to-host copy and a stream
synchronise. Tensors are bound by name (TensorRT 10 and 11 have no binding indices); their
dtypes come from the engine (an fp16 or INT8 engine still has float32 input and output,
since the typed ONNX keeps them). Every name used here exists in both versions: the test
stand-in refuses names the version it emulates lacks (``engine/trt_engine/api_names/``).
"""

from __future__ import annotations

import dataclasses
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from engine.backends.base import BackendUnavailable
from engine.model_info import ModelInfo
from engine.preprocess import DEFAULT_LETTERBOX_COLOUR
from engine.trt_engine.engine_file import EngineSidecar, check_compatible, check_pair, read_sidecar


def import_tensorrt() -> tuple[Any, Any]:
    """(tensorrt, pycuda.driver), or :class:`BackendUnavailable` saying what is missing."""
    try:
        import tensorrt as trt
    except ImportError as exc:
        raise BackendUnavailable(
            f"the tensorrt package is not installed ({exc}); install the 'tensorrt' extra from NVIDIA's index"
        ) from None
    try:
        import pycuda.driver as cuda
    except ImportError as exc:
        raise BackendUnavailable(f"pycuda is not installed ({exc}); it is needed for TensorRT buffers") from None
    return trt, cuda


def cuda_device_info(cuda: Any, index: int = 0) -> tuple[str, str]:
    """(GPU name, "major.minor" compute capability) of CUDA device ``index``."""
    try:
        cuda.init()
    except Exception as exc:  # pycuda raises its own error types when no driver or GPU is present
        raise BackendUnavailable(f"CUDA cannot start here ({exc})") from None
    if cuda.Device.count() <= index:
        raise BackendUnavailable(f"no CUDA device {index} (found {cuda.Device.count()})")
    dev = cuda.Device(index)
    major, minor = dev.compute_capability()
    return dev.name(), f"{major}.{minor}"


def unchecked_info(engine: Any, trt: Any, source: Path) -> ModelInfo:
    """Model info read off an engine's own input and output tensors, for an engine without a
    sidecar: the pre-processing is assumed to be PolypScope's (RGB/255, grey letterbox)."""
    names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
    inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
    outputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
    if len(inputs) != 1 or len(outputs) != 1:
        raise BackendUnavailable(f"{source}: expected one input and one output, found {inputs} and {outputs}")
    in_shape, out_shape = tuple(engine.get_tensor_shape(inputs[0])), tuple(engine.get_tensor_shape(outputs[0]))
    if len(in_shape) != 4 or in_shape[1] != 3 or in_shape[2] != in_shape[3] or len(out_shape) != 3 or out_shape[2] < 6:
        raise BackendUnavailable(f"{source}: input {in_shape} / output {out_shape} are not a PolypScope detector's "
                                 "([B, 3, S, S] in, [B, N, 5 + C] out)")
    classes = out_shape[2] - 5
    return ModelInfo(class_names=("polyp",) if classes == 1 else tuple(f"class{i}" for i in range(classes)),
                     input_size=int(in_shape[2]), letterbox_colour=DEFAULT_LETTERBOX_COLOUR, normalisation="rgb/255",
                     anchors=(), strides=(8, 16, 32), source_sha256="unknown",
                     output_layout="x1,y1,x2,y2,objectness,class scores...", input_name=inputs[0],
                     output_name=outputs[0], code_version="unchecked engine")


class TensorRTBackend:
    """Runs a serialized engine built by ``polypscope build-engine`` (batch 1).

    ``unchecked=True`` loads an engine without a sidecar (built by ``trtexec`` or
    Polygraphy), with a warning: its GPU, TensorRT version, source model and pre-processing
    cannot be checked, and the model info is read off its tensors."""

    def __init__(self, engine_path: str | Path, device_index: int = 0, check_onnx: bool = True,
                 unchecked: bool = False) -> None:
        trt, cuda = import_tensorrt()
        path = Path(engine_path)
        self.sidecar: EngineSidecar | None = None
        gpu, capability = cuda_device_info(cuda, device_index)
        if unchecked:
            warnings.warn(f"{path}: loaded without a sidecar: nothing about it was checked (GPU, TensorRT "
                          "version, source model, pre-processing); boxes are right only if it was built from a "
                          "PolypScope export, and its post-processing is plain NMS at the default threshold unless "
                          "--conf/--merge-iou say otherwise (the model's own settings live in the sidecar)",
                          stacklevel=2)
        else:
            self.sidecar = read_sidecar(path)
            check_compatible(path, self.sidecar, tensorrt_version=trt.__version__, gpu_name=gpu,
                             compute_capability=capability, check_onnx=check_onnx)
            check_pair(path, self.sidecar)
        self.name = "tensorrt"
        self._cuda = cuda
        self._device: dict[str, Any] = {}
        self.stream = None
        # A retained primary context, made current on this thread for our lifetime.
        self._context = cuda.Device(device_index).retain_primary_context()
        self._context.push()
        try:
            self._logger = trt.Logger(trt.Logger.WARNING)
            self._runtime = trt.Runtime(self._logger)
            self.engine = self._runtime.deserialize_cuda_engine(path.read_bytes())
            if self.engine is None:
                raise BackendUnavailable(f"{path}: TensorRT could not deserialise the engine")
            self.info = unchecked_info(self.engine, trt, path) if unchecked else \
                dataclasses.replace(self.sidecar.info(path), precision=self.sidecar.precision)
            self.execution = self.engine.create_execution_context()
            self.stream = cuda.Stream()
            self._allocate(trt)
        except BaseException:
            self._release()  # nothing half-made may keep the device memory or the context
            raise
        self._context.pop()

    def _allocate(self, trt: Any) -> None:
        cuda = self._cuda
        self._host: dict[str, np.ndarray] = {}
        self.input_name = self.output_name = ""
        size = self.info.input_size
        for i in range(self.engine.num_io_tensors):
            name = self.engine.get_tensor_name(i)
            if self.engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT:
                self.input_name = name
                # Dynamic-batch engines need a concrete shape before outputs have one.
                if not self.execution.set_input_shape(name, (1, 3, size, size)):
                    raise BackendUnavailable(f"the engine refuses input shape (1, 3, {size}, {size}) for {name}")
        for i in range(self.engine.num_io_tensors):
            name = self.engine.get_tensor_name(i)
            shape = tuple(self.execution.get_tensor_shape(name))
            if any(d < 0 for d in shape):
                raise BackendUnavailable(f"tensor {name} still has a dynamic shape {shape}")
            dtype = np.dtype(trt.nptype(self.engine.get_tensor_dtype(name)))
            host = cuda.pagelocked_empty(shape, dtype)
            device = cuda.mem_alloc(host.nbytes)
            self._device[name] = device
            self.execution.set_tensor_address(name, int(device))
            self._host[name] = host
            if self.engine.get_tensor_mode(name) == trt.TensorIOMode.OUTPUT:
                self.output_name = name

    def infer(self, tensor: np.ndarray) -> np.ndarray:
        cuda = self._cuda
        host_in = self._host[self.input_name]
        np.copyto(host_in, tensor.reshape(host_in.shape), casting="same_kind")
        self._context.push()
        try:
            cuda.memcpy_htod_async(self._device[self.input_name], host_in, self.stream)
            if not self.execution.execute_async_v3(stream_handle=self.stream.handle):
                raise RuntimeError("TensorRT execute_async_v3 failed")
            host_out = self._host[self.output_name]
            cuda.memcpy_dtoh_async(host_out, self._device[self.output_name], self.stream)
            self.stream.synchronize()
        finally:
            self._context.pop()
        return host_out if host_out.dtype == np.float32 else host_out.astype(np.float32)

    def close(self) -> None:
        if getattr(self, "_context", None) is None:
            return
        self._context.push()
        self._release()

    def _release(self) -> None:
        """Free device buffers, the stream, the execution context and the engine, then pop
        and detach the context (expects it pushed)."""
        try:
            if self.stream is not None:
                self.stream.synchronize()  # no copy may still be using a buffer freed below
            for buf in self._device.values():
                buf.free()
            self._device.clear()
            for host in getattr(self, "_host", {}).values():  # page-locked: freed while the context is current
                free = getattr(getattr(host, "base", None), "free", None)
                if free is not None:
                    free()
            self._host = {}
            self.stream = None
            self.execution = None
            self.engine = None
        finally:
            self._context.pop()
            self._context.detach()
            self._context = None
