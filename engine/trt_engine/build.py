"""``polypscope build-engine``: ONNX -> serialized TensorRT engine + JSON sidecar.

Written against the TensorRT 10 Python API: explicit-batch networks (the default in 10),
``build_serialized_network``, memory-pool limits, an optimisation profile for the batch
axis of a dynamic model, a timing cache reused across builds, and for INT8 an entropy
calibrator (``IInt8EntropyCalibrator2``) fed letterboxed validation images with a
calibration cache. Imports ``tensorrt``/``pycuda`` only inside the functions that need them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from engine.atomic import atomic_write_bytes
from engine.model_info import read_onnx_info, sha256_file
from engine.precision.calibration import CalibrationBatches, calibration_images
from engine.trt_engine.engine_file import EngineSidecar, write_sidecar

PRECISIONS = ("fp32", "fp16", "int8")
DEFAULT_WORKSPACE_MB = 2048


@dataclass
class BuildOptions:
    onnx: Path
    out: Path
    precision: str = "fp16"
    calib: Path | None = None
    calib_split: Path | None = None
    calib_images: int = 512
    calib_batch: int = 8
    workspace_mb: int = DEFAULT_WORKSPACE_MB
    max_batch: int = 8
    timing_cache: Path | None = None

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        if self.precision == "int8" and self.calib is None:
            raise ValueError("INT8 needs --calib DIR: a folder of frames like those the model will see "
                             "(validation images, never the test split)")

    @property
    def calib_cache(self) -> Path:
        return self.out.with_name(self.out.stem + ".calib.cache")

    @property
    def timing_cache_path(self) -> Path:
        return self.timing_cache or self.out.with_name("timing.cache")


def make_entropy_calibrator(trt: Any, cuda: Any, batches: CalibrationBatches, cache_path: Path) -> Any:
    """A ``trt.IInt8EntropyCalibrator2`` over ``batches``, caching its table at ``cache_path``."""

    class EntropyCalibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self) -> None:
            trt.IInt8EntropyCalibrator2.__init__(self)  # required for Python subclasses
            self._batches = iter(batches)
            self._device = cuda.mem_alloc(int(np.prod(batches.shape)) * 4)

        def get_batch_size(self) -> int:
            return batches.batch_size

        def get_batch(self, names: list[str]) -> list[int] | None:
            batch = next(self._batches, None)
            if batch is None:
                return None
            cuda.memcpy_htod(self._device, np.ascontiguousarray(batch))
            return [int(self._device)]

        def read_calibration_cache(self) -> bytes | None:
            return cache_path.read_bytes() if cache_path.is_file() else None

        def write_calibration_cache(self, cache: Any) -> None:
            atomic_write_bytes(cache_path, bytes(cache))

    return EntropyCalibrator()


def build_engine(opts: BuildOptions) -> EngineSidecar:
    from engine.backends.trt import cuda_device_info, import_tensorrt

    trt, cuda = import_tensorrt()
    info = read_onnx_info(opts.onnx)
    gpu, capability = cuda_device_info(cuda)
    context = cuda.Device(0).retain_primary_context()
    context.push()
    try:
        logger = trt.Logger(trt.Logger.WARNING)
        builder = trt.Builder(logger)
        network = builder.create_network(0)
        parser = trt.OnnxParser(network, logger)
        if not parser.parse(opts.onnx.read_bytes()):
            errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
            raise RuntimeError(f"{opts.onnx}: TensorRT cannot parse the ONNX model: {errors}")
        config = builder.create_builder_config()
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, opts.workspace_mb << 20)
        cache_bytes = opts.timing_cache_path.read_bytes() if opts.timing_cache_path.is_file() else b""
        timing_cache = config.create_timing_cache(cache_bytes)
        config.set_timing_cache(timing_cache, ignore_mismatch=False)
        input_tensor = network.get_input(0)
        size = info.input_size
        opt_shape = (1, 3, size, size)
        if input_tensor.shape[0] == -1:  # exported with --dynamic: one profile over the batch axis
            profile = builder.create_optimization_profile()
            profile.set_shape(input_tensor.name, (1, 3, size, size), opt_shape, (opts.max_batch, 3, size, size))
            config.add_optimization_profile(profile)
            if opts.precision == "int8":
                config.set_calibration_profile(profile)
        if opts.precision in ("fp16", "int8"):
            config.set_flag(trt.BuilderFlag.FP16)
        if opts.precision == "int8":
            config.set_flag(trt.BuilderFlag.INT8)
            files = calibration_images(opts.calib, opts.calib_images, opts.calib_split)
            batches = CalibrationBatches(files, size, opts.calib_batch, info.letterbox_colour)
            config.int8_calibrator = make_entropy_calibrator(trt, cuda, batches, opts.calib_cache)
        serialized = builder.build_serialized_network(network, config)
        if serialized is None:
            raise RuntimeError(f"{opts.onnx}: TensorRT failed to build an engine (see the log above)")
        atomic_write_bytes(opts.out, bytes(serialized))
        atomic_write_bytes(opts.timing_cache_path, bytes(config.get_timing_cache().serialize()))
    finally:
        context.pop()
        context.detach()
    sidecar = EngineSidecar(
        tensorrt_version=trt.__version__, gpu_name=gpu, compute_capability=capability,
        precision=opts.precision, input_name=info.input_name, input_shape=list(opt_shape),
        max_batch=opts.max_batch if input_tensor.shape[0] == -1 else 1,
        onnx_path=str(opts.onnx), onnx_sha256=sha256_file(opts.onnx), model_info=info.to_metadata(),
    )
    write_sidecar(opts.out, sidecar)
    return sidecar
