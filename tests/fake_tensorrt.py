"""Stand-ins for ``tensorrt`` and ``pycuda.driver`` that hold the engine code to the real API of
one TensorRT version, on a machine without TensorRT or a GPU.

- Every public attribute read or written on a stand-in object (module, enums, builder,
  config, network, parser, runtime, engine, execution context) is checked against the
  version's name list extracted from NVIDIA's bindings wheel (``engine/trt_engine/api_names``):
  a name that version lacks raises AttributeError, as the real module would. Names known
  by the string only but gone from one class (``BuilderFlag.INT8`` in 11, whose ``INT8``
  string lives on in ``DataType``) are left out of that class, per NVIDIA's migration guide.
- The builder records what it is asked (``calls``), refuses precision flags on a strongly
  typed network, and drives an implicit calibrator the way TensorRT 10 does: batches of
  ``get_batch_size()`` images, which must equal the network's batch.
- The "engine" is the parsed ONNX run by onnxruntime; its tensors have real dtypes
  (``DataType`` members, ``nptype``) and a dynamic batch shows ``-1`` until
  ``set_input_shape``; device buffers are byte arrays and every copy must match their size.
Not a simulation of TensorRT's optimiser: a check of how the code talks to it.
"""

from __future__ import annotations

import json
import types

import numpy as np
import onnxruntime as ort

from engine.trt_engine.api_surface import api_names, has_name, major


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple]] = []
        self.contexts: list = []
        self.streams: list = []


def make_modules(onnx_path: str | None = None, gpu: str = "Fake GPU", capability=(8, 6), version: str = "10.13.3.9"):
    """(trt, pycuda, cuda, recorder) emulating TensorRT ``version``. ``onnx_path`` is what a
    hand-made ``FAKE-ENGINE`` file (no builder involved) runs."""
    names = api_names(version)
    rec = Recorder()
    memory: dict[int, bytearray] = {}

    def check(name: str) -> None:
        if not has_name(names, name):
            raise AttributeError(f"module 'tensorrt' {version} has no attribute {name!r}")

    class Api:
        def __getattribute__(self, name):
            if not name.startswith("_"):
                check(name)
            return object.__getattribute__(self, name)

        def __setattr__(self, name, value):
            if not name.startswith("_"):
                check(name)
            object.__setattr__(self, name, value)

    class Member:
        def __init__(self, enum: str, name: str, value: int):
            self._enum, self._name, self._value = enum, name, value

        def __int__(self):
            return self._value

        def __eq__(self, other):
            return isinstance(other, Member) and (self._enum, self._name) == (other._enum, other._name)

        def __hash__(self):
            return hash((self._enum, self._name))

        def __repr__(self):
            return f"{self._enum}.{self._name}"

    def enum(name: str, members: list[str]):
        obj = Api()
        for i, m in enumerate(members):
            if has_name(names, m):
                object.__setattr__(obj, m, Member(name, m, i))
        return obj

    builder_flags = ["FP16", "BF16", "INT8", "TF32", "REFIT", "STRIP_PLAN"]
    if major(version) >= 11:  # implicit quantization and weak typing were removed
        builder_flags = [f for f in builder_flags if f not in ("FP16", "INT8")]
    BuilderFlag = enum("BuilderFlag", builder_flags)
    NetworkDefinitionCreationFlag = enum("NetworkDefinitionCreationFlag", ["EXPLICIT_BATCH", "STRONGLY_TYPED"])
    MemoryPoolType = enum("MemoryPoolType", ["WORKSPACE"])
    DataType = enum("DataType", ["FLOAT", "HALF", "INT8", "INT32", "BOOL", "BF16"])
    TensorIOMode = enum("TensorIOMode", ["NONE", "INPUT", "OUTPUT"])
    numpy_of = {"FLOAT": np.float32, "HALF": np.float16, "INT8": np.int8, "INT32": np.int32, "BOOL": np.bool_}

    def nptype(dtype):
        return numpy_of[dtype._name]

    class Logger(Api):
        def __init__(self, level):
            self._level = level

    Logger.WARNING = Member("Severity", "WARNING", 2)

    # -- CUDA ------------------------------------------------------------------------
    class DevicePtr:
        _next = 4096

        def __init__(self, nbytes: int):
            self.addr = DevicePtr._next
            self.nbytes = int(nbytes)
            DevicePtr._next += self.nbytes + 256
            memory[self.addr] = bytearray(self.nbytes)

        def __int__(self):
            return self.addr

        def free(self):
            memory.pop(self.addr, None)

    def _same_size(what: str, host: np.ndarray, device_bytes: int) -> None:
        if host.nbytes != device_bytes:
            raise ValueError(f"{what}: host buffer of {host.nbytes} bytes against {device_bytes} device bytes")

    def memcpy_htod(dst, src, stream=None):
        src = np.ascontiguousarray(src)
        _same_size("memcpy_htod", src, len(memory[int(dst)]))
        memory[int(dst)][:] = src.tobytes()

    def memcpy_dtoh(dst, src, stream=None):
        _same_size("memcpy_dtoh", dst, len(memory[int(src)]))
        np.copyto(dst, np.frombuffer(bytes(memory[int(src)]), dst.dtype).reshape(dst.shape))

    class Stream:
        handle = 1234

        def __init__(self):
            self.synchronized = 0
            rec.streams.append(self)

        def synchronize(self):
            self.synchronized += 1

    class Context:
        def __init__(self):
            self.depth = 0
            self.detached = False
            rec.contexts.append(self)

        def push(self):
            self.depth += 1

        def pop(self):
            assert self.depth > 0, "pop without push"
            self.depth -= 1

        def detach(self):
            self.detached = True

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
        memcpy_htod_async=memcpy_htod, memcpy_dtoh_async=memcpy_dtoh, memcpy_htod=memcpy_htod,
    )

    # -- building ----------------------------------------------------------------------
    class Tensor(Api):
        def __init__(self, name, shape):
            self._name, self._shape = name, tuple(shape)

        @property
        def name(self):
            return self._name

        @property
        def shape(self):
            return self._shape

    class Network(Api):
        def __init__(self, flags):
            self._flags = int(flags)
            self._onnx: bytes | None = None
            self._inputs: list = []

        @property
        def num_inputs(self):
            return len(self._inputs)

        def get_input(self, i):
            return self._inputs[i]

        def _strongly_typed(self):
            return bool(self._flags & (1 << int(NetworkDefinitionCreationFlag.STRONGLY_TYPED)))

    class OnnxParser(Api):
        def __init__(self, network, logger):
            self._network = network

        def parse(self, data):
            rec.calls.append(("parse", (len(data),)))
            problem = _explicit_quantization_problem(bytes(data))
            if problem:
                self._errors = [problem]
                return False
            session = ort.InferenceSession(bytes(data), providers=["CPUExecutionProvider"])
            self._network._onnx = bytes(data)
            for i in session.get_inputs():
                shape = [d if isinstance(d, int) else -1 for d in i.shape]
                self._network._inputs.append(Tensor(i.name, shape))
            return True

        @property
        def num_errors(self):
            return len(getattr(self, "_errors", []))

        def get_error(self, i):
            return self._errors[i]

    class TimingCache(Api):
        def __init__(self, data):
            self._data = bytes(data)

        def serialize(self):
            return self._data + b"+timing"

    class Profile(Api):
        def __init__(self):
            self._shapes = {}

        def set_shape(self, name, min, opt, max):  # noqa: A002 -- TensorRT's own argument names
            self._shapes[name] = (tuple(min), tuple(opt), tuple(max))

    class Config(Api):
        def __init__(self):
            self._flags: set = set()
            self._profiles: list = []
            self._calibrator = None
            self._calibration_profile = None
            self._timing = None

        def set_memory_pool_limit(self, pool, size):
            rec.calls.append(("set_memory_pool_limit", (pool, size)))

        def create_timing_cache(self, data):
            return TimingCache(data)

        def set_timing_cache(self, cache, ignore_mismatch):
            self._timing = cache
            return True

        def get_timing_cache(self):
            return self._timing

        def set_flag(self, flag):
            rec.calls.append(("set_flag", (flag,)))
            self._flags.add(flag)

        def add_optimization_profile(self, profile):
            self._profiles.append(profile)
            return len(self._profiles) - 1

        @property
        def int8_calibrator(self):
            return self._calibrator

        @int8_calibrator.setter
        def int8_calibrator(self, value):
            self._calibrator = value

        def set_calibration_profile(self, profile):
            self._calibration_profile = profile
            return True

    class Builder(Api):
        def __init__(self, logger):
            pass

        def create_network(self, flags):
            rec.calls.append(("create_network", (int(flags),)))
            return Network(flags)

        def create_builder_config(self):
            return Config()

        def create_optimization_profile(self):
            return Profile()

        def build_serialized_network(self, network, config):
            if network._strongly_typed() and config._flags:
                rec.calls.append(("error", ("precision flags on a strongly typed network",)))
                return None  # TensorRT logs an error and returns nullptr
            batch = network._inputs[0].shape[0]
            if batch == -1:
                profile = config._calibration_profile or (config._profiles[0] if config._profiles else None)
                batch = profile._shapes[network._inputs[0].name][1][0]
            if config._calibrator is not None:
                cal = config._calibrator
                if cal.get_batch_size() != batch:
                    rec.calls.append(("error", ("calibration batch size", cal.get_batch_size(), batch)))
                    return None
                cached = cal.read_calibration_cache()
                if not cached:
                    seen = 0
                    while cal.get_batch([network._inputs[0].name]) is not None:
                        seen += 1
                    rec.calls.append(("calibrated", (seen, batch)))
                    cal.write_calibration_cache(b"calibration-table")
            header = json.dumps({"strongly_typed": network._strongly_typed(),
                                 "flags": sorted(repr(f) for f in config._flags),
                                 "dynamic": network._inputs[0].shape[0] == -1}).encode()
            return b"FAKE-ENGINE" + len(header).to_bytes(4, "little") + header + network._onnx

    # -- running -----------------------------------------------------------------------
    class ExecutionContext(Api):
        def __init__(self, engine):
            self._engine = engine
            self._addresses: dict[str, int] = {}
            self._input_shape = None

        def set_input_shape(self, name, shape):
            if name != self._engine._input.name:
                return False
            if self._engine._dynamic and not 1 <= shape[0] <= 8:
                return False
            self._input_shape = tuple(shape)
            return True

        def get_tensor_shape(self, name):
            shape = self._engine.get_tensor_shape(name)
            if shape[0] == -1 and self._input_shape is not None:
                shape = (self._input_shape[0], *shape[1:])
            return shape

        def set_tensor_address(self, name, address):
            self._addresses[name] = int(address)
            return True

        def execute_async_v3(self, stream_handle):
            e = self._engine
            in_shape = self.get_tensor_shape(e._input.name)
            if -1 in in_shape:
                raise RuntimeError("execute_async_v3: input shape not set")
            x_bytes = memory[self._addresses[e._input.name]]
            x = np.frombuffer(bytes(x_bytes), np.float32).reshape(in_shape)
            y = e._session.run(None, {e._input.name: x})[0].astype(np.float32)
            out = memory[self._addresses[e._output.name]]
            if len(out) != y.nbytes:
                raise ValueError(f"output buffer of {len(out)} bytes for a {y.nbytes}-byte tensor")
            out[:] = y.tobytes()
            return True

    class Engine(Api):
        def __init__(self, onnx_bytes, dynamic):
            self._session = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
            self._input, self._output = self._session.get_inputs()[0], self._session.get_outputs()[0]
            self._dynamic = dynamic

        @property
        def num_io_tensors(self):
            return 2

        def get_tensor_name(self, i):
            return [self._input.name, self._output.name][i]

        def get_tensor_mode(self, name):
            return TensorIOMode.INPUT if name == self._input.name else TensorIOMode.OUTPUT

        def get_tensor_dtype(self, name):
            kind = (self._input if name == self._input.name else self._output).type
            return {"tensor(float)": DataType.FLOAT, "tensor(float16)": DataType.HALF}[kind]

        def get_tensor_shape(self, name):
            arg = self._input if name == self._input.name else self._output
            shape = tuple(d if isinstance(d, int) else -1 for d in arg.shape)
            return (-1, *shape[1:]) if self._dynamic else shape

        def create_execution_context(self):
            return ExecutionContext(self)

    class Runtime(Api):
        def __init__(self, logger):
            pass

        def deserialize_cuda_engine(self, data):
            data = bytes(data)
            if not data.startswith(b"FAKE-ENGINE"):
                return None
            rest = data[len(b"FAKE-ENGINE"):]
            if not rest:  # a hand-made engine file: runs the ONNX given to make_modules
                return Engine(open(onnx_path, "rb").read(), dynamic=False)
            n = int.from_bytes(rest[:4], "little")
            header = json.loads(rest[4:4 + n])
            return Engine(rest[4 + n:], dynamic=header["dynamic"])

    class Module(Api):
        pass

    trt = Module()
    members = dict(__version__=version, Logger=Logger, Runtime=Runtime, Builder=Builder, OnnxParser=OnnxParser,
                   BuilderFlag=BuilderFlag, NetworkDefinitionCreationFlag=NetworkDefinitionCreationFlag,
                   MemoryPoolType=MemoryPoolType, DataType=DataType, TensorIOMode=TensorIOMode, nptype=nptype)
    if has_name(names, "IInt8EntropyCalibrator2"):
        class IInt8EntropyCalibrator2:
            def __init__(self):
                pass

        members["IInt8EntropyCalibrator2"] = IInt8EntropyCalibrator2
    for key, value in members.items():
        object.__setattr__(trt, key, value)
    pycuda = types.ModuleType("pycuda")
    pycuda.driver = cuda
    return trt, pycuda, cuda, rec


def _explicit_quantization_problem(data: bytes) -> str | None:
    """What TensorRT's ONNX parser refuses in Q/DQ graphs (explicit quantization): a
    DequantizeLinear whose input is not INT8 (INT32 biases: NVIDIA, TensorRT issue 4542) and
    non-zero zero points (TensorRT quantization is symmetric)."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load_from_string(data)
    inits = {i.name: i for i in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type not in ("QuantizeLinear", "DequantizeLinear"):
            continue
        if node.op_type == "DequantizeLinear" and node.input[0] in inits \
                and inits[node.input[0]].data_type != onnx.TensorProto.INT8:
            kind = onnx.TensorProto.DataType.Name(inits[node.input[0]].data_type)
            return f"{node.name}: DequantizeLinear of {kind} is not supported (only INT8/FP8)"
        if len(node.input) > 2 and node.input[2] in inits and numpy_helper.to_array(inits[node.input[2]]).any():
            return f"{node.name}: non-zero zero point (TensorRT supports symmetric quantization only)"
    return None
