"""``polypscope val``: score a checkpoint on a dataset split and write the reports."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from models import load_checkpoint
from training.data.data_check import open_checked, print_problems, require_samples
from training.data.datasets import SPLITS_DIR
from training.data.loader import ImageCache
from training.data.negatives import polyp_free_frames
from training.evaluation.box_merge import BoxMerge
from training.evaluation.evaluate import evaluate_model, write_json
from training.evaluation.metrics import SIZE_RANGES
from training.loop.run_log import save_pr_plot

#: The score threshold the app and ``detect`` use when the model names none
#: (``engine.postprocess.DEFAULT_CONF``; training may not import the engine, a test keeps
#: the two equal).
APP_DEFAULT_CONF = 0.25

TABLE_ROWS = (
    ("ap50", "AP50"), ("ap75", "AP75"), ("ap50_95", "AP50-95 (COCO)"), ("ap_jha", "AP (Jha et al., IoU .25-.75)"),
    ("precision", "precision @ F1-best"), ("recall", "recall @ F1-best"), ("f1", "F1 (best)"),
    ("f1_threshold", "F1-best score threshold"), ("mean_iou", "mean IoU of matches"),
)


def format_table(metrics: dict[str, Any], title: str) -> str:
    lines = [title, "-" * len(title)]
    for key, label in TABLE_ROWS:
        lines.append(f"{label:<30} {metrics[key]:.4f}")
    if "ap50_ci95" in metrics:
        lo, hi = metrics["ap50_ci95"]
        lines.append(f"{'AP50 95% bootstrap interval':<30} [{lo:.4f}, {hi:.4f}]")
    lines.append(f"{'images / ground-truth boxes':<30} {metrics['images']} / {metrics['ground_truth_boxes']}")
    return "\n".join(lines)


def split_to_score(data: str | Path, requested: str | None) -> str | None:
    """The split ``val`` scores: the one asked for; else ``val`` where the folder has split
    files, else ``None`` (every image: a held-out set from another centre has no splits)."""
    if requested is not None:
        return requested
    if (Path(data) / SPLITS_DIR).is_dir():
        return "val"
    print(f"note: {data} has no {SPLITS_DIR}/ folder: scoring every image in it", file=sys.stderr)
    return None


def report_thresholds(metadata: dict[str, Any], extra: list[float] | None) -> dict[str, float]:
    """Named thresholds to report false alarms at: the checkpoint's operating threshold
    (when it has one), the app's default, and any asked for."""
    out = {}
    if "operating_threshold" in metadata:
        out["operating threshold"] = float(metadata["operating_threshold"])
    out["app default"] = APP_DEFAULT_CONF
    for t in extra or []:
        out[f"{t:g}"] = float(t)
    return out


def format_clinical(metrics: dict[str, Any]) -> str:
    """AP50 by size and the false-alarm lines, under the COCO table."""
    lines = []
    if "ap50_by_size" in metrics:
        bounds = ", ".join(f"{k} [{lo:.0%}, {min(hi, 1):.0%})" for k, (lo, hi) in SIZE_RANGES.items())
        lines.append(f"AP50 by polyp size (box area / frame area: {bounds}):")
        for name, v in metrics["ap50_by_size"].items():
            ap = "   n/a" if v["boxes"] == 0 else f"{v['ap50']:.4f}"
            lines.append(f"  {name:<8} {ap}  ({v['boxes']} boxes)")
    n = metrics.get("negative_frames", 0)
    if not n:
        for p in metrics.get("operating_points", {}).values():
            lines.append(f"recall >= {p['target']:.2f}: threshold {p['threshold']:.4f} (recall {p['recall']:.4f}"
                         f"{'' if p['reached'] else ', not reached'}); no polyp-free frames to count false alarms on")
        return "\n".join(lines)
    lines.append(f"False alarms on {n} polyp-free frames (alarms/min: frames with a box at 25 fps, before "
                 "any temporal filter):")
    lines.append(f"  {'at':<30} {'threshold':>9} {'recall':>7} {'boxes/frame':>11} {'frames w/ box':>13} "
                 f"{'95% interval':>15} {'alarms/min':>10}")
    for p in metrics["operating_points"].values():
        label = f"recall >= {p['target']:.2f}" + ("" if p["reached"] else " (not reached)")
        lines.append(f"  {label:<30} {p['threshold']:>9.4f} {p['recall']:>7.4f} {p['false_boxes_per_frame']:>11.4f} "
                     f"{p['frames_with_false_box']:>13.2%} {_interval(p):>15} {p['false_alarms_per_minute']:>10.1f}")
    for name, p in metrics["false_alarms_at"].items():
        lines.append(f"  {name:<30} {p['threshold']:>9.4f} {'':>7} {p['false_boxes_per_frame']:>11.4f} "
                     f"{p['frames_with_false_box']:>13.2%} {_interval(p):>15} {p['false_alarms_per_minute']:>10.1f}")
    b = metrics["alarm_budget"]
    label = f"<= {b['share']:.0%} of frames with a box"
    lines.append(f"  {label:<30} {b['threshold']:>9.4f} {b['recall']:>7.4f} {b['false_boxes_per_frame']:>11.4f} "
                 f"{b['frames_with_false_box']:>13.2%} {_interval(b):>15} {b['false_alarms_per_minute']:>10.1f}")
    lines.append(f"  (95% interval: Wilson, of the share of the {n} frames with a box; it narrows only with more frames)")
    return "\n".join(lines)


def _interval(figures: dict) -> str:
    lo, hi = figures.get("frames_with_false_box_ci95", (float("nan"), float("nan")))
    return f"[{lo:.1%}, {hi:.1%}]"


def box_merge_for(metadata: dict[str, Any], merge_iou: float | None) -> BoxMerge:
    """``--merge-iou`` when given (0: plain NMS), else what the checkpoint was shipped with;
    the score ratio is the checkpoint's either way, as the runtime ``Detector`` takes it."""
    shipped = BoxMerge.from_metadata(metadata)
    if merge_iou is None:
        return shipped
    return BoxMerge.from_iou(merge_iou, shipped.score_ratio)


def validate(args: argparse.Namespace) -> int:
    ckpt = load_checkpoint(args.weights)
    size = args.img or ckpt.config.input_size
    split = split_to_score(args.data, args.split)
    name = split or "all images"
    index = open_checked(args.data, split, show_progress=not args.quiet)
    require_samples(index, split)
    print_problems(index, f"split {split!r}" if split else str(args.data))
    cache = ImageCache(index.samples, size)
    folder = getattr(args, "negatives", None)
    negatives, problems = polyp_free_frames(index, folder, getattr(args, "mine_negatives", True),
                                            show_progress=not args.quiet)
    for problem in problems:
        print(f"warning: {folder}: {problem}", file=sys.stderr)
    negative_cache = ImageCache(negatives, size)
    merge = box_merge_for(ckpt.metadata, getattr(args, "merge_iou", None))
    metrics, evaluator = evaluate_model(ckpt.model, cache, size, ckpt.config.class_names,
                                        bootstrap_reps=args.bootstrap, show_progress=not args.quiet,
                                        negatives=negative_cache,
                                        thresholds=report_thresholds(ckpt.metadata, getattr(args, "threshold", None)),
                                        merge=merge)
    metrics = {"weights": str(args.weights), "data": str(Path(args.data).resolve()), "split": split,
               "input_size": size, "box_merge_iou": merge.iou, **metrics}
    print(format_table(metrics, f"{Path(args.weights).name} on {name} ({len(index.samples)} images, {size} px, "
                                f"{merge.describe()})"))
    clinical = format_clinical(metrics)
    if clinical:
        print(clinical)
    if args.json_out:
        write_json(args.json_out, metrics)
    if args.coco_out:
        write_json(args.coco_out, evaluator.coco_results())
    if getattr(args, "false_alarms_out", None):
        from training.evaluation.alarm_overlap import alarm_record

        scored_as = {k: metrics[k] for k in ("data", "split", "input_size", "box_merge_iou")}
        write_json(args.false_alarms_out, alarm_record(negative_cache.samples, evaluator.negative_detections,
                                                       metrics["operating_points"]["recall_0.90"],
                                                       str(args.weights), scored_as))
    if getattr(args, "review_sheet", None):
        _write_review_sheet(args, metrics, evaluator, negative_cache, name)
    if args.pr_plot:
        save_pr_plot(evaluator.image_results(), Path(args.pr_plot), f"{Path(args.weights).stem} on {name}")
    return 0


def _write_review_sheet(args: argparse.Namespace, metrics: dict[str, Any], evaluator, negative_cache,
                        name: str) -> None:
    """The false alarms and misses at the recall-0.90 operating point, as pictures."""
    from training.evaluation.review_sheet import save_review_sheet

    threshold = metrics["operating_points"]["recall_0.90"]["threshold"]
    counts = save_review_sheet(args.review_sheet, threshold, negative_cache.samples,
                               evaluator.negative_detections, evaluator.samples,
                               evaluator.image_results(), f"{Path(args.weights).name} on {name}")
    print(f"review sheet: {args.review_sheet} ({counts['false_alarm_frames']} polyp-free frames with a box, "
          f"{counts['missed_polyps']} polyps missed at the recall-0.90 threshold {threshold:.3f})")
