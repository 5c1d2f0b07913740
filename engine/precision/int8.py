"""INT8 by explicit quantization: Q/DQ nodes written into the ONNX by onnxruntime.quantization.

Static quantization, per-channel symmetric int8 weights and per-tensor activations whose
ranges come from TRAINING frames letterboxed exactly as at run time. The decode and the three
output convolutions stay in float (``nodes_to_exclude``): the output convolutions produce the
logits whose small differences decide which boxes pass the threshold, and the decode turns
offsets into pixels. ``extra_exclude`` leaves more in float (``polypscope quantize
--keep-float``); which layers deserve it has not been measured yet.

The result runs on onnxruntime's CPU provider (VNNI int8 kernels on these EPYCs) and is what
TensorRT builds from without a calibrator (the only INT8 route TensorRT 11 has).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from engine.model_info import read_onnx_info
from engine.precision.calibration import CalibrationBatches, calibration_images
from engine.precision.fp16 import DECODE_PREFIX

OUTPUT_CONV_MARK = "/out/conv/"
CALIBRATION_METHODS = ("minmax", "entropy", "percentile")


def float_nodes(onnx_path: str | Path, extra_exclude: tuple[str, ...] = ()) -> list[str]:
    """Nodes left unquantized: the decode, the output convolutions, and ``extra_exclude``
    (node names, or name fragments such as ``/heads.0/``)."""
    import onnx

    names = [n.name for n in onnx.load(str(onnx_path)).graph.node]
    keep = [n for n in names if n.startswith(DECODE_PREFIX) or OUTPUT_CONV_MARK in n
            or any(fragment in n for fragment in extra_exclude)]
    if not any(n.startswith(DECODE_PREFIX) for n in keep):
        raise ValueError(f"{onnx_path}: no /decoder/ nodes: not a PolypScope export")
    return keep


class _FrameReader:
    """onnxruntime's CalibrationDataReader protocol over letterboxed frames."""

    def __init__(self, batches: CalibrationBatches, input_name: str) -> None:
        self._frames: Iterator[np.ndarray] = iter(batches)
        self._input_name = input_name

    def get_next(self) -> dict[str, np.ndarray] | None:
        batch = next(self._frames, None)
        return None if batch is None else {self._input_name: batch}


TARGETS = ("cpu", "tensorrt")


def quantize_int8(onnx_in: str | Path, onnx_out: str | Path, calib: str | Path, *, calib_split: str | Path | None = None,
                  max_images: int = 256, method: str = "percentile", extra_exclude: tuple[str, ...] = (),
                  target: str = "cpu") -> Path:
    """Write a Q/DQ INT8 copy of ``onnx_in`` calibrated on frames of ``calib`` (a dataset folder
    calibrates on its ``splits/train.txt`` unless ``calib_split`` names another id list).

    ``target`` picks the format each runtime runs best. CPU: unsigned 8-bit activations with
    a zero point and signed symmetric weights (onnxruntime's x86 "U8S8"; measured faster here
    than signed symmetric activations, ``docs/performance.md``) and INT32 biases, which its
    kernels fuse. TensorRT: symmetric signed activations (it has no zero points) and biases
    kept in float, since its parser has no INT32 DequantizeLinear (NVIDIA, TensorRT issue
    4542), every weight with its own Q/DQ pair, as NVIDIA's explicit-quantization examples do."""
    if target not in TARGETS:
        raise ValueError(f"target must be one of {TARGETS}, got {target!r}")
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    if method not in CALIBRATION_METHODS:
        raise ValueError(f"calibration method must be one of {CALIBRATION_METHODS}, got {method!r}")
    info = read_onnx_info(onnx_in)
    files = calibration_images(calib, max_images, calib_split)
    batches = CalibrationBatches(files, info.input_size, batch_size=1, colour=info.letterbox_colour)
    out = Path(onnx_out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    quantize_static(
        str(onnx_in), str(tmp), _FrameReader(batches, info.input_name),
        quant_format=QuantFormat.QDQ, per_channel=True, weight_type=QuantType.QInt8,
        activation_type=QuantType.QUInt8 if target == "cpu" else QuantType.QInt8,
        calibrate_method={"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
                          "percentile": CalibrationMethod.Percentile}[method],
        nodes_to_exclude=float_nodes(onnx_in, extra_exclude),
        extra_options={"WeightSymmetric": True, "ActivationSymmetric": target == "tensorrt",
                       **({"QuantizeBias": False, "DedicatedQDQPair": True} if target == "tensorrt" else {})},
    )
    _tag(tmp, {"precision": "int8", "int8_target": target,
               "int8_calibration": f"{method} on {len(files) - len(batches.skipped)} frames "
               f"of {Path(calib).name}" + (f" ({Path(calib_split).name})" if calib_split else "")})
    tmp.replace(out)
    return out


def _tag(path: Path, entries: dict[str, str]) -> None:
    """Add metadata entries (quantize_static keeps the model's own)."""
    import onnx

    model = onnx.load(str(path))
    existing = {p.key: p for p in model.metadata_props}
    for key, value in entries.items():
        prop = existing.get(key) or model.metadata_props.add()
        prop.key, prop.value = key, value
    onnx.save(model, str(path))
