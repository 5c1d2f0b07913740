"""Running a model over a dataset split and scoring it (detectron2-style evaluator).

Detections are mapped back to original image pixels before scoring, so the numbers are
those of the images as annotated, whatever the input size.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader

from models.decode import FIRST_CLASS_INDEX, OBJECTNESS_INDEX
from training.data.augment.pipeline import letterbox_params
from training.data.datasets import Sample
from training.data.loader import EvalDataset, ImageCache, collate
from training.evaluation.box_merge import BoxMerge, merge_boxes
from training.evaluation.false_alarms import false_alarms, threshold_for_alarm_share
from training.evaluation.metrics import (
    IOU_OPERATING,
    ImageResult,
    ap_by_size,
    detection_metrics,
    match_all,
    recall_at,
    recall_operating_point,
)
from training.progress import progress

EVAL_CONF = 0.001
#: The runtime's NMS IoU (``engine.postprocess.DEFAULT_IOU``; a test keeps them equal), so
#: the operating threshold chosen here holds for the boxes ``detect`` and the app keep.
EVAL_NMS_IOU = 0.45
#: Recall on the split at which the operating points are reported.
RECALL_TARGETS = (0.90, 0.95)
#: The false-alarm budget reported beside them: at most this share of polyp-free frames
#: with a box (the issue's bar for the shipped model).
ALARM_BUDGET = 0.02


@dataclass
class ImageDetections:
    """Detections of one image in its original pixels."""

    boxes: np.ndarray   # [N, 4] xyxy
    scores: np.ndarray  # [N]
    labels: np.ndarray  # [N]


def postprocess(pred: torch.Tensor, conf: float = EVAL_CONF, iou: float = EVAL_NMS_IOU,
                max_dets: int = 100, merge: BoxMerge | None = None) -> list[ImageDetections]:
    """Decoded ``[B, N, 5+C]`` -> per-image detections in input pixels (score = obj x cls,
    class-aware NMS with OpenCV, then box merging when ``merge`` asks for it)."""
    merging = merge is not None and merge.iou is not None
    # With merging, candidates down to ratio x conf take part (as in the runtime), so a box
    # kept just above ``conf`` merges the same neighbours here as there.
    floor = conf * merge.score_ratio if merging else conf
    out = []
    for p in pred.detach().float().cpu():
        cls_scores = p[:, FIRST_CLASS_INDEX:] * p[:, OBJECTNESS_INDEX:OBJECTNESS_INDEX + 1]
        scores, labels = cls_scores.max(1)
        keep = scores > floor
        boxes, scores, labels = p[keep, :4].numpy(), scores[keep].numpy(), labels[keep].numpy()
        if len(scores):
            xywh = np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], 1)
            # Suppress among all candidates, then keep the best ``max_dets``: OpenCV's
            # ``top_k`` would cut to the top k raw boxes BEFORE suppression, so a cluster of
            # overlapping boxes could push every other object out (and val would disagree
            # with the runtime's engine.postprocess, which suppresses first as well).
            idx = cv2.dnn.NMSBoxesBatched(xywh.tolist(), scores.tolist(), labels.tolist(), floor, iou)
            idx = np.asarray(idx, dtype=int).reshape(-1)
            idx = idx[scores[idx] > conf]  # those under it were there only to be merged
            idx = idx[np.argsort(-scores[idx], kind="stable")][:max_dets]
            kept = boxes[idx]
            if merging and idx.size:
                kept = merge_boxes(idx, boxes, scores, labels, merge.iou, merge.score_ratio)
            boxes, scores, labels = kept, scores[idx], labels[idx]
        out.append(ImageDetections(boxes.reshape(-1, 4), scores, labels.astype(np.int64)))
    return out


def to_original_pixels(det: ImageDetections, original_hw: tuple[int, int], cached_hw: tuple[int, int],
                       size: int) -> ImageDetections:
    """Undo the letterbox (padding and both resizes) and clip to the original image."""
    ch, cw = cached_hw
    lb_scale, left, top = letterbox_params(ch, cw, size)
    h, w = original_hw
    per_axis = np.array([w / cw, h / ch, w / cw, h / ch], np.float32)
    boxes = (det.boxes - np.array([left, top, left, top], np.float32)) / lb_scale * per_axis
    boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, w)
    boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, h)
    return ImageDetections(boxes, det.scores, det.labels)


class DetectionEvaluator:
    """reset / process / evaluate, as in detectron2's DatasetEvaluator."""

    def __init__(self, samples: list[Sample], class_names: tuple[str, ...]) -> None:
        self.samples = samples
        self.class_names = class_names
        self.reset()

    def reset(self) -> None:
        self.detections: dict[int, ImageDetections] = {}
        # What the model raised on the polyp-free frames scored beside the split, in their order
        # (kept so the review sheet can draw them without running the model again).
        self.negative_detections: list[ImageDetections] = []

    def process(self, indices: Iterable[int], detections: Iterable[ImageDetections]) -> None:
        for i, det in zip(indices, detections):
            self.detections[i] = det

    def image_results(self) -> list[ImageResult]:
        out = []
        for i, s in enumerate(self.samples):
            det = self.detections.get(i, ImageDetections(np.zeros((0, 4)), np.zeros(0), np.zeros(0, int)))
            hw = s.frame_hw
            out.append(ImageResult(det.boxes, det.scores, s.boxes, float(hw[0] * hw[1]) if hw else 0.0))
        return out

    def evaluate(self, bootstrap_reps: int = 1000) -> dict[str, Any]:
        return detection_metrics(self.image_results(), bootstrap_reps=bootstrap_reps)

    def coco_results(self) -> list[dict[str, Any]]:
        """Predictions in COCO results format (bbox as x, y, w, h), with file names."""
        rows = []
        for i, s in enumerate(self.samples):
            det = self.detections.get(i)
            if det is None:
                continue
            for box, score, label in zip(det.boxes, det.scores, det.labels):
                x1, y1, x2, y2 = (float(v) for v in box)
                rows.append({"image_id": i + 1, "file_name": s.image_path.name,
                             "category_id": int(label) + 1, "bbox": [x1, y1, x2 - x1, y2 - y1],
                             "score": float(score)})
        return rows

    def coco_ground_truth(self) -> dict[str, Any]:
        """The split's ground truth as a COCO dataset (for pycocotools cross-checks)."""
        images, annotations = [], []
        for i, s in enumerate(self.samples):
            h, w = s.size if s.size else (0, 0)
            images.append({"id": i + 1, "file_name": s.image_path.name, "height": h, "width": w})
            for box, label in zip(s.boxes, s.labels):
                x1, y1, x2, y2 = (float(v) for v in box)
                annotations.append({"id": len(annotations) + 1, "image_id": i + 1,
                                    "category_id": int(label) + 1, "bbox": [x1, y1, x2 - x1, y2 - y1],
                                    "area": (x2 - x1) * (y2 - y1), "iscrowd": 0})
        categories = [{"id": i + 1, "name": n} for i, n in enumerate(self.class_names)]
        return {"images": images, "annotations": annotations, "categories": categories}


@torch.no_grad()
def run_inference(model: torch.nn.Module, cache: ImageCache, size: int, *, batch_size: int = 16,
                  conf: float = EVAL_CONF, show_progress: bool = False,
                  merge: BoxMerge | None = None) -> dict[int, ImageDetections]:
    """Detections for every cached image, in original pixels (plain NMS unless ``merge``)."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    loader = DataLoader(EvalDataset(cache, size), batch_size=batch_size, shuffle=False, collate_fn=collate)
    out: dict[int, ImageDetections] = {}
    for batch in progress(loader, desc="evaluate", enabled=show_progress):
        pred = model(batch.images.to(device))
        for idx, det in zip(batch.indices, postprocess(pred, conf=conf, merge=merge)):
            sample = cache.samples[idx]
            original = sample.frame_hw or cv2.imread(str(sample.image_path)).shape[:2]
            out[idx] = to_original_pixels(det, original, cache[idx].image.shape[:2], size)
    model.train(was_training)
    return out


def evaluate_model(model: torch.nn.Module, cache: ImageCache, size: int, class_names: tuple[str, ...],
                   *, bootstrap_reps: int = 0, show_progress: bool = False,
                   negatives: ImageCache | None = None,
                   thresholds: Mapping[str, float] | None = None,
                   merge: BoxMerge | None = None) -> tuple[dict[str, Any], DetectionEvaluator]:
    """COCO metrics of the split in ``cache`` and the clinical figures of
    :func:`clinical_metrics`; false alarms among them only with ``negatives`` (polyp-free
    frames), at the recall targets and at each named threshold of ``thresholds``. ``merge``:
    box merging after NMS (default: plain NMS, what training's curves and the study use)."""
    evaluator = DetectionEvaluator(cache.samples, class_names)
    dets = run_inference(model, cache, size, show_progress=show_progress, merge=merge)
    evaluator.process(dets.keys(), dets.values())
    metrics = evaluator.evaluate(bootstrap_reps=bootstrap_reps)
    frame_scores: list[np.ndarray] = []
    if negatives is not None and len(negatives):
        neg = run_inference(model, negatives, size, show_progress=show_progress, merge=merge)
        evaluator.negative_detections = [neg[i] for i in range(len(negatives))]
        frame_scores = [d.scores for d in evaluator.negative_detections]
    metrics.update(clinical_metrics(evaluator.image_results(), frame_scores, thresholds or {}))
    return metrics, evaluator


def clinical_metrics(results: list[ImageResult], negative_frame_scores: list[np.ndarray],
                     thresholds: Mapping[str, float]) -> dict[str, Any]:
    """AP50 by polyp size on the split; the strictest thresholds that still reach recall
    0.90 and 0.95 on it; and, given polyp-free frames, the false alarms there, at each
    named threshold (``{"app default": 0.25}``), and the threshold that keeps false boxes to
    :data:`ALARM_BUDGET` of those frames with the recall it leaves."""
    out: dict[str, Any] = {"negative_frames": len(negative_frame_scores)}
    if results and all(r.frame_area > 0 for r in results):
        out["ap50_by_size"] = ap_by_size(results)
    matches = match_all(results, np.array([IOU_OPERATING]))  # once, for every threshold below
    points = {}
    for target in RECALL_TARGETS:
        point = dataclasses.asdict(recall_operating_point(matches, target))
        if negative_frame_scores:
            point.update(false_alarms(negative_frame_scores, point["threshold"]).as_dict())
        points[f"recall_{target:.2f}"] = point
    out["operating_points"] = points
    if not negative_frame_scores:
        return out
    out["false_alarms_at"] = {name: false_alarms(negative_frame_scores, t).as_dict() for name, t in thresholds.items()}
    budget = threshold_for_alarm_share(negative_frame_scores, ALARM_BUDGET)
    recall, precision = recall_at(matches, budget)
    out["alarm_budget"] = {"share": ALARM_BUDGET, "recall": recall, "precision": precision,
                           **false_alarms(negative_frame_scores, budget).as_dict()}
    return out


def write_json(path: str | Path, data: Any) -> None:
    from models.checkpoint import atomic_write_bytes

    atomic_write_bytes(path, json.dumps(data, indent=2).encode())
