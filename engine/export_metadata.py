"""The model info a YOLOv3 config implies (shared by the exporter and the torch backend)."""

from __future__ import annotations

from engine.model_info import ModelInfo
from engine.preprocess import DEFAULT_LETTERBOX_COLOUR

NORMALISATION = "rgb/255"
INPUT_NAME = "images"
OUTPUT_NAME = "predictions"
STRIDES = (8, 16, 32)


def operating_threshold(metadata: dict) -> float | None:
    """A checkpoint's operating threshold (``training.release.ship`` chooses it on val), if any."""
    value = metadata.get("operating_threshold")
    return None if value is None else float(value)


def box_merge_fields(metadata: dict) -> dict[str, float | None]:
    """A checkpoint's box-merging setting (``training.release.ship`` writes it) as
    :func:`model_info_from_config` keywords; both None for a checkpoint shipped without it."""
    iou = metadata.get("box_merge_iou")
    ratio = metadata.get("box_merge_score_ratio")
    return {"box_merge_iou": None if iou is None else float(iou),
            "box_merge_score_ratio": None if iou is None or ratio is None else float(ratio)}


def output_layout(class_names: tuple[str, ...]) -> str:
    return "x1,y1,x2,y2,objectness," + ",".join(f"score:{n}" for n in class_names)


def model_info_from_config(config, source_sha256: str, code_version: str = "", *,
                           params: int | None = None, gflops: float | None = None,
                           operating_threshold: float | None = None,
                           box_merge_iou: float | None = None,
                           box_merge_score_ratio: float | None = None) -> ModelInfo:
    """``config`` is a ``models.YoloConfig`` (duck-typed: this module imports no torch)."""
    return ModelInfo(
        class_names=tuple(config.class_names),
        input_size=int(config.input_size),
        letterbox_colour=DEFAULT_LETTERBOX_COLOUR,
        normalisation=NORMALISATION,
        anchors=tuple(tuple(a) for a in config.anchors),
        strides=STRIDES,
        source_sha256=source_sha256,
        output_layout=output_layout(tuple(config.class_names)),
        input_name=INPUT_NAME,
        output_name=OUTPUT_NAME,
        code_version=code_version,
        params=params,
        gflops=gflops,
        operating_threshold=operating_threshold,
        box_merge_iou=box_merge_iou,
        box_merge_score_ratio=box_merge_score_ratio,
    )
