"""``polypscope export``: checkpoint -> ONNX with decoding inside and runtime metadata.

The graph's single output ``predictions`` is ``[B, N, 5 + C]``: x1, y1, x2, y2 in input
pixels, objectness, per-class probabilities (see ``engine.export_metadata``). Everything
a runtime needs (class names, input size, letterbox colour, normalisation, anchors, the
source checkpoint's sha256) is embedded in the model's metadata. The file is checked with
``onnx.checker``, simplified with onnxslim, and verified against torch on real frames.

Needs torch (the ``train`` extra); the runtime that reads the result does not.
"""

from __future__ import annotations

import io
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engine.atomic import atomic_write_bytes, atomic_write_text
from engine.detections import Detections
from engine.export_metadata import (
    INPUT_NAME,
    OUTPUT_NAME,
    box_merge_fields,
    model_info_from_config,
    operating_threshold,
)
from engine.model_info import ModelInfo, sha256_file
from engine.postprocess import postprocess
from engine.preprocess import Preprocessor

DEFAULT_OPSET = 17
PARITY_ATOL = 1e-4
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")


class ExportError(RuntimeError):
    """Export failed a check (ONNX checker, parity with torch); says which and by how much."""


@dataclass
class ParityReport:
    images: int
    max_abs_diff: float
    same_detections: bool
    sources: list[str]


@dataclass
class ExportResult:
    path: Path
    info: ModelInfo
    parity: ParityReport | None
    nodes_before: int
    nodes_after: int


def export_onnx(weights: str | Path, out: str | Path, *, dynamic: bool = False, opset: int = DEFAULT_OPSET,
                simplify: bool = True, check_images: list[Path] | None = None,
                input_size: int | None = None) -> ExportResult:
    import onnx
    import torch

    from models import load_checkpoint
    from models.complexity import count_flops, count_parameters
    from models.version import code_version

    ckpt = load_checkpoint(weights)
    model = ckpt.model.eval()
    if input_size is not None and input_size != ckpt.config.input_size:  # the same weights at another size
        from models import with_input_size

        model = with_input_size(model, input_size).eval()
    size = model.config.input_size
    info = model_info_from_config(model.config, sha256_file(weights), code_version(),
                                  params=count_parameters(model),
                                  gflops=round(count_flops(model, size) / 1e9, 4),
                                  operating_threshold=operating_threshold(ckpt.metadata),
                                  **box_merge_fields(ckpt.metadata))
    dummy = torch.zeros(1, 3, size, size)
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model, dummy, buf, opset_version=opset, input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}} if dynamic else None,
            do_constant_folding=True, dynamo=False,
        )
    proto = onnx.load_from_string(buf.getvalue())
    nodes_before = len(proto.graph.node)
    if simplify:
        import onnxslim

        proto = onnxslim.slim(proto)
    del proto.metadata_props[:]
    for key, value in info.to_metadata().items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    proto.producer_name = "polypscope"
    proto.doc_string = ("PolypScope YOLOv3 polyp detector. Input 'images': [B,3,S,S] RGB float in [0,1], "
                        "letterboxed. Output 'predictions': [B,N,5+C] x1,y1,x2,y2 (input pixels), "
                        "objectness, class probabilities.")
    try:
        onnx.checker.check_model(proto, full_check=True)
    except onnx.checker.ValidationError as exc:
        raise ExportError(f"{out}: the exported graph fails onnx.checker: {exc}") from None
    path = atomic_write_bytes(out, proto.SerializeToString())
    parity = verify_parity(model, path, info, check_images) if check_images is not None else None
    return ExportResult(path, info, parity, nodes_before, len(proto.graph.node))


def load_frames(paths: list[Path], size: int, fallback_count: int = 4) -> tuple[list[np.ndarray], list[str]]:
    """BGR frames from ``paths``; synthetic frames when none is readable."""
    import cv2

    frames, names = [], []
    for p in paths:
        image = cv2.imread(str(p), cv2.IMREAD_COLOR)
        if image is not None:
            frames.append(image)
            names.append(p.name)
    if not frames:
        rng = np.random.default_rng(0)
        for i in range(fallback_count):
            frames.append(rng.integers(0, 256, (size + 37 * i, size + 53 * i, 3), dtype=np.uint8))
            names.append(f"synthetic-{i}")
    return frames, names


def verify_parity(model, onnx_path: Path, info: ModelInfo, images: list[Path]) -> ParityReport:
    """Run torch and onnxruntime on the same letterboxed frames: outputs within
    ``PARITY_ATOL`` (boxes as fractions of the input side, scores as probabilities) and
    identical detections after NMS, or :class:`ExportError`."""
    import onnxruntime as ort
    import torch

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    frames, names = load_frames(images, info.input_size)
    prep = Preprocessor(info.input_size, info.letterbox_colour)
    worst = 0.0
    same = True
    for frame in frames:
        tensor, box = prep(frame)
        with torch.no_grad():
            expected = model(torch.from_numpy(tensor.copy())).numpy()
        got = session.run([OUTPUT_NAME], {INPUT_NAME: tensor})[0]
        worst = max(worst, _scale_free_diff(expected, got, info.input_size))
        a, b = postprocess(expected, box), postprocess(got, box)  # at the default operating point
        same &= _same_detections(a, b)
    report = ParityReport(len(frames), worst, same, names)
    if worst > PARITY_ATOL or not same:
        raise ExportError(f"{onnx_path}: onnxruntime differs from torch: max |diff| {worst:.2e} "
                          f"(limit {PARITY_ATOL:.0e}), same detections after NMS: {same}")
    return report


def _scale_free_diff(a: np.ndarray, b: np.ndarray, size: int) -> float:
    """Max |a - b| over the output with boxes as fractions of the input side (scores are
    already in [0, 1]), so the tolerance means the same at every input size."""
    scale = np.ones(a.shape[-1], np.float32)
    scale[:4] = 1.0 / size
    return float(np.abs((a - b) * scale).max())


def _same_detections(a: Detections, b: Detections, box_px: float = 0.05, score: float = 1e-4) -> bool:
    """Same boxes (within a twentieth of a frame pixel), scores and classes, in order."""
    return (len(a) == len(b) and np.array_equal(a.classes, b.classes)
            and np.allclose(a.boxes, b.boxes, atol=box_px) and np.allclose(a.scores, b.scores, atol=score))


def default_check_images(limit: int = 8) -> list[Path]:
    """Real frames to verify parity on: Kvasir-SEG val images when the data is around."""
    roots = [Path(os.environ["POLYPSCOPE_DATA"])] if os.environ.get("POLYPSCOPE_DATA") else []
    roots.append(Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "kvasir-seg")
    for root in roots:
        split = root / "splits" / "val.txt"
        if split.is_file():
            ids = split.read_text().split()[:limit]
            return [root / "images" / f"{i}.jpg" for i in ids]
    return []


def write_triton_repository(onnx_path: Path, info: ModelInfo, repo: str | Path, *, name: str = "polypscope",
                            max_batch: int = 0) -> Path:
    """A Triton model repository: ``REPO/NAME/config.pbtxt`` and ``REPO/NAME/1/model.onnx``.

    ``max_batch`` > 0 needs a model exported with ``--dynamic``; Triton then batches
    requests from many streams (dynamic batching) on one GPU.
    """
    root = Path(repo) / name
    (root / "1").mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(root / "1" / "model.onnx", onnx_path.read_bytes())
    rows = 3 * sum((info.input_size // s) ** 2 for s in info.strides)
    width = 5 + info.num_classes
    s = info.input_size
    in_dims = f"[ 3, {s}, {s} ]" if max_batch else f"[ 1, 3, {s}, {s} ]"
    out_dims = f"[ {rows}, {width} ]" if max_batch else f"[ 1, {rows}, {width} ]"
    config = f"""name: "{name}"
platform: "onnxruntime_onnx"
max_batch_size: {max_batch}
input [
  {{
    name: "{info.input_name}"
    data_type: TYPE_FP32
    dims: {in_dims}
  }}
]
output [
  {{
    name: "{info.output_name}"
    data_type: TYPE_FP32
    dims: {out_dims}
  }}
]
instance_group [ {{ kind: KIND_GPU, count: 1 }} ]
optimization {{
  execution_accelerators {{
    gpu_execution_accelerator: [ {{
      name: "tensorrt"
      parameters {{ key: "precision_mode" value: "FP16" }}
    }} ]
  }}
}}
{"dynamic_batching { max_queue_delay_microseconds: 2000 }" if max_batch else ""}
parameters {{ key: "polypscope.input_size" value: {{ string_value: "{s}" }} }}
parameters {{ key: "polypscope.output_layout" value: {{ string_value: "{info.output_layout}" }} }}
"""
    atomic_write_text(root / "config.pbtxt", config)
    return root
