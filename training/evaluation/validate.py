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
from training.evaluation.evaluate import evaluate_model, write_json
from training.run_log import save_pr_plot

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


def validate(args: argparse.Namespace) -> int:
    ckpt = load_checkpoint(args.weights)
    size = args.img or ckpt.config.input_size
    split = split_to_score(args.data, args.split)
    name = split or "all images"
    index = open_checked(args.data, split, show_progress=not args.quiet)
    require_samples(index, split)
    print_problems(index, f"split {split!r}" if split else str(args.data))
    cache = ImageCache(index.samples, size)
    metrics, evaluator = evaluate_model(ckpt.model, cache, size, ckpt.config.class_names,
                                        bootstrap_reps=args.bootstrap, show_progress=not args.quiet)
    metrics = {"weights": str(args.weights), "data": str(Path(args.data).resolve()), "split": split,
               "input_size": size, **metrics}
    print(format_table(metrics, f"{Path(args.weights).name} on {name} ({len(index.samples)} images, {size} px)"))
    if args.json_out:
        write_json(args.json_out, metrics)
    if args.coco_out:
        write_json(args.coco_out, evaluator.coco_results())
    if args.pr_plot:
        save_pr_plot(evaluator.image_results(), Path(args.pr_plot), f"{Path(args.weights).stem} on {name}")
    return 0

