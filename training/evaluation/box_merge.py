"""Box merging after NMS: the setting a shipped model carries, and the merge itself.

Greedy NMS keeps the highest-scoring box of each cluster and throws the rest away, but the
neighbouring cells and anchors that produced the rest saw the same polyp: the
score-weighted mean of the cluster fits it more tightly (YOLOv5's merge NMS; weighted boxes
fusion in spirit). Scores do not change, so neither do the false alarms on polyp-free
frames at a given threshold; the boxes move, which changes AP50-95 mostly, and recall (so the
operating threshold) a little (docs/accuracy.md "Box merging after NMS").

The runtime does the same in ``engine.postprocess`` (numpy; training may not import
``engine``, and ``engine`` may not import torch); ``tests/test_box_merge.py`` keeps the
two in step. The setting travels in the checkpoint's metadata and from there into the ONNX
file, so a model shipped without it keeps plain NMS.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from training.box_ops import box_iou

IOU_KEY = "box_merge_iou"
SCORE_RATIO_KEY = "box_merge_score_ratio"
#: The values chosen on val (docs/accuracy.md): overlap above 0.6, at least half the kept score.
CHOSEN_IOU = 0.6
CHOSEN_SCORE_RATIO = 0.5


@dataclass(frozen=True)
class BoxMerge:
    """Merge candidates of the kept box's class with IoU > ``iou`` and a score of at least
    ``score_ratio`` x the kept box's. ``iou`` None: plain NMS."""

    iou: float | None = None
    score_ratio: float = CHOSEN_SCORE_RATIO

    def __post_init__(self) -> None:
        if self.iou is not None and not 0.0 < self.iou <= 1.0:
            raise ValueError(f"box merge IoU must be in (0, 1] (0: off), got {self.iou}")
        if not 0.0 < self.score_ratio <= 1.0:
            raise ValueError(f"box merge score ratio must be in (0, 1], got {self.score_ratio}")

    @classmethod
    def off(cls) -> BoxMerge:
        return cls(None)

    @classmethod
    def chosen(cls) -> BoxMerge:
        return cls(CHOSEN_IOU, CHOSEN_SCORE_RATIO)

    @classmethod
    def from_iou(cls, iou: float | None, score_ratio: float = CHOSEN_SCORE_RATIO) -> BoxMerge:
        """From a command-line value, where 0 means off (and the ratio, then unused, is checked
        but not kept: every "off" is the same setting)."""
        merge = cls(None if iou is None or float(iou) == 0.0 else float(iou), float(score_ratio))
        return cls.off() if merge.iou is None else merge

    @classmethod
    def from_metadata(cls, metadata: dict[str, Any]) -> BoxMerge:
        """What a checkpoint was shipped with; a checkpoint without the keys uses plain NMS."""
        iou = metadata.get(IOU_KEY)
        if iou is None:
            return cls.off()
        return cls.from_iou(float(iou), float(metadata.get(SCORE_RATIO_KEY, CHOSEN_SCORE_RATIO)))

    def to_metadata(self) -> dict[str, float]:
        return {} if self.iou is None else {IOU_KEY: self.iou, SCORE_RATIO_KEY: self.score_ratio}

    def describe(self) -> str:
        return "plain NMS" if self.iou is None else f"NMS + box merging (IoU > {self.iou:g}, score >= {self.score_ratio:g} x)"


def merge_boxes(kept: np.ndarray, boxes: np.ndarray, scores: np.ndarray, labels: np.ndarray,
                merge_iou: float, score_ratio: float) -> np.ndarray:
    """Each kept box (indices ``kept`` into the candidates) replaced by the score-weighted
    mean of the candidates of its class that overlap it by more than ``merge_iou`` and score
    at least ``score_ratio`` times it (itself included, so a lone box stays put).

    The floor relative to the kept box makes the merge independent of the score threshold:
    a box kept above t only merges candidates above ``score_ratio`` x t, which the runtime
    keeps when it runs at t."""
    iou = box_iou(torch.from_numpy(boxes[kept]).double(), torch.from_numpy(boxes).double()).numpy()
    near = (iou > merge_iou) & (labels[kept][:, None] == labels[None, :])
    near &= scores[None, :] >= score_ratio * scores[kept][:, None]
    near[np.arange(len(kept)), kept] = True  # itself, even a degenerate (zero-area) box
    weights = near * scores[None, :].astype(np.float64)
    return ((weights @ boxes.astype(np.float64)) / weights.sum(1, keepdims=True)).astype(boxes.dtype)
