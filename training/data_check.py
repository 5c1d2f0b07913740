"""``polypscope data check``: counts, box statistics and every problem, by file."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from training.datasets import (
    SPLITS_DIR,
    DatasetIndex,
    Problem,
    open_dataset,
    read_split_ids,
)
from training.progress import progress


def _check_files(index: DatasetIndex, show_progress: bool) -> list[Problem]:
    """Decode every image and mask; flag unreadable files and size mismatches."""
    problems = []
    for s in progress(index.samples, desc="reading images", enabled=show_progress):
        image = cv2.imread(str(s.image_path), cv2.IMREAD_COLOR)
        rel = os.path.relpath(s.image_path, index.root)
        if image is None:
            problems.append(Problem(s.id, rel, "image cannot be decoded", True))
            continue
        h, w = image.shape[:2]
        if s.size is not None and s.size != (h, w):
            problems.append(Problem(s.id, rel, f"image is {w}x{h} but the annotation says {s.size[1]}x{s.size[0]}", False))
        if s.mask_path is not None:
            mask = cv2.imread(str(s.mask_path), cv2.IMREAD_GRAYSCALE)
            mrel = os.path.relpath(s.mask_path, index.root)
            if mask is None:
                problems.append(Problem(s.id, mrel, "mask cannot be decoded", False))
            elif mask.shape != (h, w):
                problems.append(Problem(s.id, mrel, f"mask is {mask.shape[1]}x{mask.shape[0]}, image {w}x{h}", False))
            elif not (mask >= 128).any():
                problems.append(Problem(s.id, mrel, "mask is empty", False))
        b = s.boxes
        tiny = ((b[:, 2] - b[:, 0]) < 0.01 * w) | ((b[:, 3] - b[:, 1]) < 0.01 * h)
        for box in b[tiny]:
            problems.append(Problem(s.id, rel, f"box {box.tolist()} is under 1% of the image side: annotation error?", False))
    return problems


def _box_stats(index: DatasetIndex) -> dict[str, Any]:
    rel_w, rel_h, per_image = [], [], []
    for s in index.samples:
        h, w = s.size if s.size else (1, 1)
        per_image.append(len(s.boxes))
        rel_w.extend(((s.boxes[:, 2] - s.boxes[:, 0]) / w).tolist())
        rel_h.extend(((s.boxes[:, 3] - s.boxes[:, 1]) / h).tolist())
    if not per_image:
        return {}
    q = [5, 50, 95]
    return {
        "boxes": int(sum(per_image)),
        "boxes_per_image": {str(k): int(v) for k, v in zip(*np.unique(per_image, return_counts=True))},
        "relative_width_p5_p50_p95": [round(float(v), 4) for v in np.percentile(rel_w, q)],
        "relative_height_p5_p50_p95": [round(float(v), 4) for v in np.percentile(rel_h, q)],
    }


def check_dataset(root: str | os.PathLike[str], show_progress: bool = True) -> dict[str, Any]:
    index = open_dataset(root)
    problems = index.problems + _check_files(index, show_progress)
    splits = {}
    split_dir = Path(root) / SPLITS_DIR
    if split_dir.is_dir():
        known = {s.id for s in index.samples}
        for f in sorted(split_dir.glob("*.txt")):
            ids = read_split_ids(Path(root), f.stem)
            missing = [i for i in ids if i not in known]
            splits[f.stem] = {"listed": len(ids), "usable": len(ids) - len(missing)}
            problems.extend(Problem(i, f"{SPLITS_DIR}/{f.name}", "listed id has no usable sample", True) for i in missing)
        names = list(splits)
        for a in range(len(names)):
            for b in range(a + 1, len(names)):
                overlap = set(read_split_ids(Path(root), names[a])) & set(read_split_ids(Path(root), names[b]))
                if overlap:
                    problems.append(Problem(sorted(overlap)[0], SPLITS_DIR,
                                            f"splits {names[a]} and {names[b]} share {len(overlap)} ids", False))
    return {
        "root": str(Path(root)),
        "format": index.format,
        "classes": list(index.class_names),
        "images": len(index.samples),
        "splits": splits,
        **_box_stats(index),
        "problems": [str(p) for p in problems],
        "skipped": sorted({p.item for p in problems if p.skipped}),
    }


def format_report(report: dict[str, Any]) -> str:
    lines = [f"{report['root']} ({report['format']}): {report['images']} usable images, "
             f"classes {report['classes']}"]
    if "boxes" in report:
        lines.append(f"boxes: {report['boxes']}; per image: {report['boxes_per_image']}")
        lines.append(f"box width / image width  p5 p50 p95: {report['relative_width_p5_p50_p95']}")
        lines.append(f"box height / image height p5 p50 p95: {report['relative_height_p5_p50_p95']}")
    for name, s in report["splits"].items():
        lines.append(f"split {name}: {s['listed']} listed, {s['usable']} usable")
    lines.append(f"problems: {len(report['problems'])} ({len(report['skipped'])} items skipped)")
    lines.extend(f"  {p}" for p in report["problems"])
    return "\n".join(lines)
