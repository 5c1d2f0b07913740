"""What a runtime needs to know about a model, read from the ONNX file's own metadata.

The exporter writes these keys (``polypscope.*``) into the ONNX ``metadata_props``, so a
``.onnx`` alone is enough to run: no checkpoint, no config file, no torch. Files without
them are refused rather than guessed at, and so is a graph whose input and output do not
match its metadata (metadata copied onto another network, or a graph edited after export):
onnxruntime would otherwise fail at the first frame with a message that names no file.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

FORMAT_KEY = "polypscope.format"
FORMAT_VERSION = "1"
KEYS = ("class_names", "input_size", "letterbox_colour", "normalisation", "anchors", "strides",
        "source_sha256", "output_layout", "input_name", "output_name", "code_version")
#: Written by the exporter for reports (bench); a model without them still runs.
OPTIONAL_KEYS = ("params", "gflops", "operating_threshold", "box_merge_iou", "box_merge_score_ratio")


class ModelFormatError(ValueError):
    """A model file that is not a PolypScope model or lacks what a runtime needs."""


@dataclass(frozen=True)
class ModelInfo:
    class_names: tuple[str, ...]
    input_size: int
    letterbox_colour: tuple[int, int, int]
    #: How pixels become input values: ``"rgb/255"`` (RGB order, divided by 255).
    normalisation: str
    anchors: tuple[tuple[float, float], ...]
    strides: tuple[int, ...]
    source_sha256: str
    #: Layout of the last output axis, e.g. ``"x1,y1,x2,y2,objectness,class scores..."``.
    output_layout: str
    input_name: str = "images"
    output_name: str = "predictions"
    code_version: str = ""
    params: int | None = None
    gflops: float | None = None
    #: The score threshold chosen on validation data (the strictest reaching recall 0.90):
    #: what ``detect`` and the app use unless told otherwise.
    operating_threshold: float | None = None
    #: Box merging after NMS, as the model was validated and shipped with it
    #: (``engine.postprocess.merge_boxes``); None: plain NMS.
    box_merge_iou: float | None = None
    box_merge_score_ratio: float | None = None
    #: The arithmetic the model file runs in: "fp32", or "fp16"/"int8" for the copies made by
    #: ``polypscope quantize`` (their ``precision`` metadata); shown beside the backend.
    precision: str = "fp32"

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def to_metadata(self) -> dict[str, str]:
        """As ONNX ``metadata_props`` (string values only)."""
        out = {FORMAT_KEY: FORMAT_VERSION}
        for key in KEYS + OPTIONAL_KEYS:
            value = getattr(self, key)
            if value is not None:
                out[f"polypscope.{key}"] = value if isinstance(value, str) else json.dumps(value)
        return out

    @classmethod
    def from_metadata(cls, meta: Mapping[str, str], source: str | Path) -> ModelInfo:
        if meta.get(FORMAT_KEY) is None:
            raise ModelFormatError(
                f"{source}: not a PolypScope model (its metadata has no '{FORMAT_KEY}'); "
                "export one with 'polypscope export --weights CHECKPOINT'"
            )
        if meta[FORMAT_KEY] != FORMAT_VERSION:
            raise ModelFormatError(f"{source}: PolypScope model format {meta[FORMAT_KEY]!r} is not supported")
        missing = [k for k in KEYS if f"polypscope.{k}" not in meta]
        if missing:
            raise ModelFormatError(f"{source}: PolypScope metadata is incomplete, missing {missing}")
        raw = {k: meta[f"polypscope.{k}"] for k in KEYS}
        try:
            return cls(
                class_names=tuple(json.loads(raw["class_names"])),
                input_size=int(json.loads(raw["input_size"])),
                letterbox_colour=tuple(json.loads(raw["letterbox_colour"])),
                normalisation=raw["normalisation"],
                anchors=tuple(tuple(a) for a in json.loads(raw["anchors"])),
                strides=tuple(json.loads(raw["strides"])),
                source_sha256=raw["source_sha256"],
                output_layout=raw["output_layout"],
                input_name=raw["input_name"],
                output_name=raw["output_name"],
                code_version=raw["code_version"],
                params=_optional(meta, "params", int),
                gflops=_optional(meta, "gflops", float),
                operating_threshold=_optional(meta, "operating_threshold", float),
                box_merge_iou=_optional(meta, "box_merge_iou", float),
                box_merge_score_ratio=_optional(meta, "box_merge_score_ratio", float),
                precision=meta.get("precision", "fp32"),
            )
        except (ValueError, TypeError) as exc:
            raise ModelFormatError(f"{source}: PolypScope metadata cannot be parsed ({exc})") from None


def _optional(meta: Mapping[str, str], key: str, kind: type) -> Any:
    value = meta.get(f"polypscope.{key}")
    return None if value is None else kind(json.loads(value))


def read_onnx_info(path: str | Path) -> ModelInfo:
    """Model info from an ONNX file, read through onnxruntime (no ``onnx`` package needed)."""
    import onnxruntime as ort

    p = Path(path)
    if not p.is_file():
        raise ModelFormatError(f"{p}: no such model file")
    try:
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        session = ort.InferenceSession(str(p), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own exception types
        raise ModelFormatError(f"{p}: not a readable ONNX model ({exc})") from None
    info = ModelInfo.from_metadata(session.get_modelmeta().custom_metadata_map, p)
    check_graph_io(session, info, p)
    return info


def expected_rows(info: ModelInfo) -> int:
    """Prediction rows N of a square input: three anchors per cell of every output scale."""
    return 3 * sum((info.input_size // s) ** 2 for s in info.strides)


def check_graph_io(session: Any, info: ModelInfo, source: str | Path) -> None:
    """Raise :class:`ModelFormatError` unless the session has one float input
    ``[1 or dynamic, 3, S, S]`` and one float output ``[B, N, 5 + C]``, named as the metadata
    says (S = input_size, N = 3 * sum((S / stride)^2), C = number of classes)."""
    s = info.input_size
    checks = (("input", session.get_inputs(), info.input_name, ["1 or dynamic", 3, s, s]),
              ("output", session.get_outputs(), info.output_name, ["B", expected_rows(info), 5 + info.num_classes]))
    for role, args, name, want in checks:
        names = [a.name for a in args]
        if names != [name]:
            raise ModelFormatError(f"{source}: the graph does not match its PolypScope metadata: its {role}s are "
                                   f"{names}, the metadata says one {role} {name!r}")
        shape, kind = list(args[0].shape), args[0].type
        if kind != "tensor(float)" or not _shape_fits(shape, want, fixed_batch=role == "input"):
            raise ModelFormatError(f"{source}: the graph does not match its PolypScope metadata: {role} {name!r} is "
                                   f"{kind} {shape}, expected tensor(float) {want} (input_size {s}, strides "
                                   f"{list(info.strides)}, {info.num_classes} classes)")


def _shape_fits(shape: list, want: list, fixed_batch: bool) -> bool:
    """Every axis but the first as wanted; the first (batch) 1 or symbolic when ``fixed_batch``."""
    if len(shape) != len(want) or shape[1:] != want[1:]:
        return False
    return not fixed_batch or not isinstance(shape[0], int) or shape[0] == 1


def sha256_file(path: str | Path) -> str:
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
