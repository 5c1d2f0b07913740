"""``polypscope score``: AP of an exported model (.onnx, .engine) on a dataset split, run
exactly as it runs in the app -- the runtime ``Detector``'s letterbox from the full frame,
its backend, its NMS -- rather than through torch as ``val`` does.

This is how reduced-precision copies are judged against float32 (both scored the same way,
side by side) and how an engine is checked on real frames. The metrics are ``val``'s
(training.evaluation, imported lazily: a runtime install without the training extra can
run everything else).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import cv2

from engine.detector import Detector


def score_exported(model: str | Path, data: str | Path, split: str, backend: str = "onnxruntime-cpu",
                   bootstrap: int = 0, threads: int = 0) -> dict[str, Any]:
    from training.data.data_check import open_checked, require_samples
    from training.evaluation.evaluate import EVAL_CONF, EVAL_NMS_IOU, DetectionEvaluator, ImageDetections

    detector = Detector(model, backend, conf=EVAL_CONF, iou=EVAL_NMS_IOU, threads=threads)
    index = open_checked(data, split)
    require_samples(index, split)
    samples = [s for s in index.samples if s.crop is None]
    evaluator = DetectionEvaluator(samples, detector.info.class_names)
    for i, sample in enumerate(samples):
        image = cv2.imread(str(sample.image_path), cv2.IMREAD_COLOR)
        if image is None:
            raise ValueError(f"{sample.image_path}: not a readable image")
        dets = detector(image)
        evaluator.process([i], [ImageDetections(dets.boxes, dets.scores, dets.classes)])
    metrics = evaluator.evaluate(bootstrap_reps=bootstrap)
    return {"model": str(model), "backend": detector.backend_name, "split": split, "images": len(samples),
            "box_merge_iou": detector.merge_iou,
            **{k: metrics[k] for k in ("ap50", "ap75", "ap50_95", "precision", "recall", "f1") if k in metrics},
            **({"ap50_ci95": metrics["ap50_ci95"]} if "ap50_ci95" in metrics else {})}


def add_score_parser(sub: argparse._SubParsersAction, handler: Any) -> None:
    p = sub.add_parser("score", help="AP of an exported model (.onnx/.engine) on a split, run as the app runs it",
                       description="Runs the runtime Detector (letterbox from the full frame, the chosen backend, "
                                   "the runtime NMS) over every image of the split and reports val's metrics. Use "
                                   "it to compare an INT8 or fp16 copy with the float32 model, scored the same way.")
    p.add_argument("--model", required=True, help=".onnx or .engine")
    p.add_argument("--data", required=True, help="dataset folder")
    p.add_argument("--split", default="val", help="split to score (default val; test only for what ships)")
    p.add_argument("--backend", default="onnxruntime-cpu", help="backend (default onnxruntime-cpu)")
    p.add_argument("--bootstrap", type=int, default=0, help="bootstrap resamples for an AP50 interval (default 0)")
    p.add_argument("--threads", type=int, default=0, help="inference threads (default: all cores)")
    p.add_argument("--json-out", help="write the figures here as JSON")
    p.set_defaults(handler=handler)


def run_score(args: argparse.Namespace) -> int:
    result = score_exported(args.model, args.data, args.split, args.backend, args.bootstrap, args.threads)
    print(f"{result['model']} on {args.split} ({result['images']} images, {result['backend']}): "
          f"AP50 {result['ap50']:.4f}, AP50-95 {result['ap50_95']:.4f}")
    if args.json_out:
        from engine.atomic import atomic_write_text

        atomic_write_text(args.json_out, json.dumps(result, indent=2))
    return 0
