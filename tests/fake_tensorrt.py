"""Stand-ins for ``tensorrt`` and ``pycuda.driver`` that follow the TensorRT 10 / pycuda
API names the backend uses, with an "engine" that runs the real ONNX model through
onnxruntime and "device memory" in host bytearrays. They let the whole native-TensorRT
data path (named tensor binding, page-locked buffers, async copies, execute_async_v3)
run and be checked on a machine without a GPU. Not a simulation of TensorRT itself."""

from __future__ import annotations

import types

import numpy as np
import onnxruntime as ort


def make_modules(onnx_path: str, gpu: str = "Fake GPU", capability=(8, 6), version: str = "10.3.0"):
    memory: dict[int, bytearray] = {}

    class DevicePtr:
        _next = 4096

        def __init__(self, nbytes: int):
            self.addr = DevicePtr._next
            DevicePtr._next += nbytes + 256
            memory[self.addr] = bytearray(nbytes)

        def __int__(self):
            return self.addr

        def free(self):
            memory.pop(self.addr, None)

    class Stream:
        handle = 1234

        def synchronize(self):
            pass

    class Context:
        def push(self):
            pass

        def pop(self):
            pass

        def detach(self):
            pass

    class Device:
        def __init__(self, index):
            self.index = index

        @staticmethod
        def count():
            return 1

        def name(self):
            return gpu

        def compute_capability(self):
            return capability

        def retain_primary_context(self):
            return Context()

    cuda = types.SimpleNamespace(
        init=lambda: None, Device=Device, Stream=Stream, mem_alloc=DevicePtr,
        pagelocked_empty=lambda shape, dtype: np.empty(shape, dtype),
        memcpy_htod_async=lambda dst, src, stream: memory[int(dst)].__setitem__(slice(None), np.ascontiguousarray(src).tobytes()),
        memcpy_dtoh_async=lambda dst, src, stream: np.copyto(dst, np.frombuffer(bytes(memory[int(src)]), dst.dtype).reshape(dst.shape)),
        memcpy_htod=lambda dst, src: memory[int(dst)].__setitem__(slice(None), np.ascontiguousarray(src).tobytes()),
    )

    session = ort.InferenceSession(onnx_path, providers=["CPUExecutionProvider"])
    inp, out = session.get_inputs()[0], session.get_outputs()[0]
    shapes = {inp.name: tuple(inp.shape), out.name: tuple(out.shape)}

    class TensorIOMode:
        INPUT, OUTPUT = "input", "output"

    class ExecutionContext:
        def __init__(self):
            self.addresses: dict[str, int] = {}
            self.input_shape = None

        def set_input_shape(self, name, shape):
            assert name == inp.name, f"unknown input {name}"
            self.input_shape = tuple(shape)
            return True

        def get_tensor_shape(self, name):
            return shapes[name]

        def set_tensor_address(self, name, address):
            self.addresses[name] = int(address)
            return True

        def execute_async_v3(self, stream_handle):
            x = np.frombuffer(bytes(memory[self.addresses[inp.name]]), np.float32).reshape(shapes[inp.name])
            y = session.run(None, {inp.name: x})[0]
            memory[self.addresses[out.name]][:] = y.astype(np.float32).tobytes()
            return True

    class Engine:
        num_io_tensors = 2
        names = [inp.name, out.name]

        def get_tensor_name(self, i):
            return self.names[i]

        def get_tensor_mode(self, name):
            return TensorIOMode.INPUT if name == inp.name else TensorIOMode.OUTPUT

        def get_tensor_dtype(self, name):
            return "float32"

        def create_execution_context(self):
            return ExecutionContext()

    class Runtime:
        def __init__(self, logger):
            pass

        def deserialize_cuda_engine(self, data):
            return Engine() if data.startswith(b"FAKE-ENGINE") else None

    class Logger:
        WARNING = 2

        def __init__(self, level):
            pass

    trt = types.SimpleNamespace(__version__=version, Logger=Logger, Runtime=Runtime, TensorIOMode=TensorIOMode,
                                nptype=lambda dtype: np.float32)
    pycuda = types.ModuleType("pycuda")
    pycuda.driver = cuda
    return trt, pycuda, cuda
