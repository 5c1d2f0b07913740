"""``polypscope build-engine``: ONNX -> serialized TensorRT engine + JSON sidecar, on 10.x and 11.x.

Precision comes from types, the only way TensorRT 11 has (it removed implicit quantization
and weak typing: ``BuilderFlag.FP16/INT8`` and the INT8 calibrators are gone):

- ``fp32``: the ONNX as exported, a strongly typed network;
- ``fp16``: an fp16 copy of the ONNX (input, output and the box decode kept in float32;
  :mod:`engine.precision.fp16`), strongly typed;
- ``int8``: a Q/DQ copy of the ONNX (:mod:`engine.precision.int8`, calibrated on TRAINING
  frames, biases kept in float for TensorRT's parser), strongly typed: TensorRT takes the
  scales from the Q/DQ nodes, no calibrator. The layers left unquantized (decode, output
  convolutions) then run in float32: a strongly typed network has no fp16 fall-back;
- ``int8-calibrated``: TensorRT 10 only, the implicit entropy calibrator on the float
  ONNX with ``BuilderFlag.FP16 | INT8``, fed batches of the network's own batch size (1
  for a static model; the old code fed 8-image batches, so 512 images became 64).

Caches are keyed so that they cannot be reused wrongly: the timing cache by GPU, compute
capability and TensorRT version; the calibration cache by the ONNX's sha256. The engine is
written first and its sidecar, which records the engine's sha256, second: a crash between
the two leaves a pair that loading rejects, never a mismatched pair that loads. Imports
``tensorrt`` and the CUDA bindings only inside the functions that need them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from engine.atomic import atomic_write_bytes
from engine.model_info import read_onnx_info, sha256_file
from engine.precision.calibration import CalibrationBatches, calibration_images, images_digest
from engine.trt_engine.engine_file import EngineSidecar, write_sidecar

PRECISIONS = ("fp32", "fp16", "int8", "int8-calibrated")
DEFAULT_WORKSPACE_MB = 2048


class UnsupportedOnThisTensorRT(RuntimeError):
    """The precision asked for needs an API this TensorRT version does not have."""


@dataclass
class BuildOptions:
    onnx: Path
    out: Path
    precision: str = "fp16"
    calib: Path | None = None
    calib_split: Path | None = None
    calib_images: int = 512
    workspace_mb: int = DEFAULT_WORKSPACE_MB
    max_batch: int = 8
    cache_dir: Path | None = None   # timing and calibration caches (default: beside the engine)

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        if self.precision == "int8-calibrated" and self.calib is None:
            raise ValueError("int8-calibrated needs --calib DIR: TRAINING frames (a dataset folder calibrates on "
                             "its splits/train.txt)")
        if self.precision == "int8" and self.calib is None and not _is_qdq(self.onnx):
            raise ValueError("INT8 needs --calib DIR: frames like those the model will see, from the TRAINING "
                             "split (a dataset folder calibrates on its splits/train.txt); or pass an ONNX that "
                             "already has Q/DQ nodes (polypscope quantize --target tensorrt)")

    @property
    def caches(self) -> Path:
        return self.cache_dir or self.out.parent

    def timing_cache(self, tensorrt_version: str, gpu: str, capability: str) -> Path:
        """One timing cache per GPU model, compute capability and TensorRT version."""
        slug = re.sub(r"[^A-Za-z0-9]+", "-", gpu).strip("-").lower()
        return self.caches / f"timing-{slug}-cc{capability}-trt{tensorrt_version}.cache"

    def calibration_cache(self, onnx_sha256: str, images: str) -> Path:
        """The implicit calibrator's table, tied to the exact ONNX and the frames it was
        measured on (``images``: :func:`engine.precision.calibration.images_digest`)."""
        return self.caches / f"{self.out.stem}.calib-{onnx_sha256[:16]}-{images}.cache"

    def typed_onnx(self) -> Path:
        """Where the precision's ONNX copy goes (beside the engine)."""
        return self.out.with_name(f"{self.out.stem}.{self.precision}.onnx")


def _is_qdq(onnx_path: Path) -> bool:
    """Whether an ONNX file already carries Q/DQ nodes (from any tool)."""
    import onnx

    try:
        model = onnx.load(str(onnx_path), load_external_data=False)
    except Exception as exc:  # onnx raises several types for unreadable files
        raise ValueError(f"{onnx_path}: not a readable ONNX model ({exc})") from None
    return any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in model.graph.node)


def typed_source(opts: BuildOptions) -> Path:
    """The ONNX the network is parsed from, carrying the precision in its types."""
    from engine.precision.fp16 import write_fp16
    from engine.precision.int8 import quantize_int8

    if opts.precision in ("fp32", "int8-calibrated"):
        return opts.onnx
    if opts.precision == "fp16":
        return write_fp16(opts.onnx, opts.typed_onnx())
    if _is_qdq(opts.onnx):
        return opts.onnx
    return quantize_int8(opts.onnx, opts.typed_onnx(), opts.calib, calib_split=opts.calib_split,
                         max_images=opts.calib_images, target="tensorrt")


def make_entropy_calibrator(trt: Any, cuda: Any, batches: CalibrationBatches, cache_path: Path) -> Any:
    """A ``trt.IInt8EntropyCalibrator2`` (TensorRT 10) over ``batches``, caching its table at
    ``cache_path``. Its batch size is the batches' (the network's own batch size)."""
    if not hasattr(trt, "IInt8EntropyCalibrator2"):
        raise UnsupportedOnThisTensorRT(f"TensorRT {trt.__version__} has no implicit INT8 calibrator "
                                        "(removed in 11); build with --precision int8 (Q/DQ) instead")

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


def _network_flags(trt: Any, precision: str) -> int:
    if precision == "int8-calibrated":
        return 0  # weakly typed: the builder flags choose the precision (TensorRT 10 only)
    return 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)


def _check_supported(trt: Any, precision: str) -> None:
    if precision != "int8-calibrated":
        return
    flags = trt.BuilderFlag
    if not (hasattr(flags, "INT8") and hasattr(flags, "FP16") and hasattr(trt, "IInt8EntropyCalibrator2")):
        raise UnsupportedOnThisTensorRT(
            f"--precision int8-calibrated needs implicit quantization, which TensorRT {trt.__version__} does not "
            "have (TensorRT 11 removed it); use --precision int8 (Q/DQ nodes, no calibrator)")


def build_engine(opts: BuildOptions) -> EngineSidecar:
    from engine.backends.trt import cuda_device_info, import_tensorrt

    trt, cuda = import_tensorrt()
    _check_supported(trt, opts.precision)
    info = read_onnx_info(opts.onnx)
    source = typed_source(opts)
    gpu, capability = cuda_device_info(cuda)
    context = cuda.Device(0).retain_primary_context()
    context.push()
    try:
        logger = trt.Logger(trt.Logger.WARNING)
        builder = trt.Builder(logger)
        network = builder.create_network(_network_flags(trt, opts.precision))
        parser = trt.OnnxParser(network, logger)
        if not parser.parse(source.read_bytes()):
            errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
            raise RuntimeError(f"{source}: TensorRT cannot parse the ONNX model: {errors}")
        config = builder.create_builder_config()
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, opts.workspace_mb << 20)
        timing_path = opts.timing_cache(trt.__version__, gpu, capability)
        timing_cache = config.create_timing_cache(timing_path.read_bytes() if timing_path.is_file() else b"")
        config.set_timing_cache(timing_cache, ignore_mismatch=False)
        input_tensor = network.get_input(0)
        size = info.input_size
        opt_shape = (1, 3, size, size)
        dynamic = input_tensor.shape[0] == -1
        if dynamic:  # exported with --dynamic: one profile over the batch axis
            profile = builder.create_optimization_profile()
            profile.set_shape(input_tensor.name, (1, 3, size, size), opt_shape, (opts.max_batch, 3, size, size))
            config.add_optimization_profile(profile)
        if opts.precision == "int8-calibrated":
            config.set_flag(trt.BuilderFlag.FP16)
            config.set_flag(trt.BuilderFlag.INT8)
            if dynamic:
                config.set_calibration_profile(profile)  # calibrates at its opt shape: batch 1
            files = calibration_images(opts.calib, opts.calib_images, opts.calib_split)
            batches = CalibrationBatches(files, size, batch_size=opt_shape[0], colour=info.letterbox_colour)
            config.int8_calibrator = make_entropy_calibrator(
                trt, cuda, batches, opts.calibration_cache(sha256_file(opts.onnx), images_digest(files)))
        serialized = builder.build_serialized_network(network, config)
        if serialized is None:
            raise RuntimeError(f"{source}: TensorRT failed to build an engine (see the log above)")
        engine_bytes = bytes(serialized)
        atomic_write_bytes(timing_path, bytes(config.get_timing_cache().serialize()))
    finally:
        context.pop()
        context.detach()
    atomic_write_bytes(opts.out, engine_bytes)
    sidecar = EngineSidecar(
        tensorrt_version=trt.__version__, gpu_name=gpu, compute_capability=capability,
        precision=opts.precision, input_name=info.input_name, input_shape=list(opt_shape),
        max_batch=opts.max_batch if dynamic else 1,
        onnx_path=str(opts.onnx), onnx_sha256=sha256_file(opts.onnx), model_info=info.to_metadata(),
        engine_sha256=sha256_file(opts.out), built_from=str(source),
    )
    write_sidecar(opts.out, sidecar)
    return sidecar
