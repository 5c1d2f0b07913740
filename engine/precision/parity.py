"""Does a reduced-precision model find the same polyps as float32? Compared by detections.

Raw tensors differ by design (float16 rounding, INT8 steps); what matters is whether the
boxes a clinician sees are the same: each reference box is matched to the candidate box of
highest IoU (greedy, by reference score); reported are the share of reference boxes found
(IoU >= 0.5), the mean IoU of the matches, the score drift of matched boxes, and the boxes
only one model draws. Both models run at the same low threshold so that boxes near the
operating threshold are compared too.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np

from engine.detections import box_iou

PARITY_CONF = 0.05
MATCH_IOU = 0.5


@dataclass
class Parity:
    frames: int
    reference_boxes: int
    candidate_boxes: int
    matched: int
    mean_iou: float | None          # None: nothing matched
    mean_score_drift: float | None
    max_score_drift: float | None
    crossings: int = 0              # matched boxes on opposite sides of ``threshold``
    threshold: float = 0.25

    @property
    def recall_of_reference(self) -> float:
        return self.matched / self.reference_boxes if self.reference_boxes else 1.0

    def to_dict(self) -> dict:
        return {**asdict(self), "recall_of_reference": self.recall_of_reference}

    def summary(self) -> str:
        if self.mean_iou is None:
            return (f"{self.frames} frames: none of {self.reference_boxes} float32 boxes found; "
                    f"{self.candidate_boxes} boxes only the candidate draws")
        return (f"{self.frames} frames: {self.matched}/{self.reference_boxes} float32 boxes found "
                f"(IoU >= {MATCH_IOU}, mean IoU {self.mean_iou:.3f}), score drift mean {self.mean_score_drift:.4f} "
                f"max {self.max_score_drift:.4f}, {self.crossings} on the other side of the threshold "
                f"{self.threshold:g}, {self.candidate_boxes - self.matched} boxes only the candidate draws")


def compare_detections(pairs: list[tuple[object, object]], threshold: float = 0.25) -> Parity:
    """``pairs`` of (reference, candidate) :class:`~engine.detections.Detections` per frame;
    ``threshold`` is the operating threshold whose crossings are counted."""
    ref_total = cand_total = matched = crossings = 0
    ious: list[float] = []
    drifts: list[float] = []
    for ref, cand in pairs:
        ref_total += len(ref)
        cand_total += len(cand)
        if not len(ref) or not len(cand):
            continue
        iou = box_iou(ref.boxes, cand.boxes)
        taken: set[int] = set()
        for i in np.argsort(-ref.scores):
            order = [j for j in np.argsort(-iou[i]) if j not in taken]
            if order and iou[i, order[0]] >= MATCH_IOU:
                j = order[0]
                taken.add(j)
                matched += 1
                ious.append(float(iou[i, j]))
                drifts.append(abs(float(ref.scores[i]) - float(cand.scores[j])))
                crossings += int((ref.scores[i] > threshold) != (cand.scores[j] > threshold))
    return Parity(len(pairs), ref_total, cand_total, matched, float(np.mean(ious)) if ious else None,
                  float(np.mean(drifts)) if drifts else None, float(np.max(drifts)) if drifts else None,
                  crossings, threshold)


def parity_on_frames(reference: str | Path, candidate: str | Path, frames: list[Path],
                     conf: float = PARITY_CONF) -> Parity:
    """Run both ONNX models on onnxruntime's CPU provider over ``frames`` and compare."""
    from engine.detector import Detector

    ref = Detector(reference, "onnxruntime-cpu", conf=conf, warmup=0)
    cand = Detector(candidate, "onnxruntime-cpu", conf=conf, warmup=0)
    threshold = ref.model_conf
    pairs = []
    for path in frames:
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None:
            raise ValueError(f"{path}: not a readable image")
        pairs.append((ref(image), cand(image)))
    return compare_detections(pairs, threshold)
