"""Which samples of a dataset are usable, and every problem, by file.

:func:`open_checked` is the single source of truth: ``polypscope data check`` prints its
findings as a report, and ``train`` and ``val`` train and score on exactly the samples it
keeps (printing its problems as warnings), so the three commands can never disagree about
a file.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from training.data.datasets import (
    KVASIR_BOXES_FILE,
    MASK_THRESHOLD,
    SPLITS_DIR,
    DatasetError,
    DatasetIndex,
    Problem,
    Sample,
    mask_size_problem,
    open_dataset,
    read_split_ids,
    undecodable,
)
from training.data.image_files import UnreadableImage, read_grayscale, read_image
from training.progress import progress


def open_checked(root: str | os.PathLike[str], split: str | None = None, *,
                 show_progress: bool = False) -> DatasetIndex:
    """The dataset at ``root`` (restricted to ``split``) with every image decoded once:
    samples whose image cannot be decoded leave the index as skipped problems, and the
    masks the reader did not need are checked against the annotated size."""
    index = open_dataset(root, split)
    checked = DatasetIndex(index.root, index.format, index.class_names, problems=list(index.problems))
    for sample in progress(index.samples, desc="reading images", enabled=show_progress):
        problems = _check_sample(index.root, sample)
        checked.problems.extend(problems)
        if not any(p.skipped for p in problems):
            checked.samples.append(sample)
    return checked


def require_samples(index: DatasetIndex, split: str | None) -> None:
    """Raise :class:`DatasetError` naming the folder (and split) when nothing is usable:
    training or scoring on nothing would only fail later, less clearly."""
    if index.samples:
        return
    skipped = len({p.item for p in index.skipped})
    why = f"all {skipped} items were skipped (see 'polypscope data check {index.root}')" if skipped \
        else "it lists nothing"
    if split is None:
        raise DatasetError(f"{index.root}: the dataset has no usable samples: {why}")
    raise DatasetError(f"{index.root / SPLITS_DIR / f'{split}.txt'}: split {split!r} has no usable samples: {why}")


def print_problems(index: DatasetIndex, name: str, stream: TextIO | None = None) -> None:
    """Every problem as a ``warning:`` line on stderr, then how many items were left out."""
    out = stream or sys.stderr
    for problem in index.problems:
        print(f"warning: {problem}", file=out)
    skipped = len({p.item for p in index.skipped})
    if skipped:
        print(f"warning: {name}: {skipped} item(s) skipped, {len(index.samples)} usable", file=out)


def _check_sample(root: Path, s: Sample) -> list[Problem]:
    """Decode one sample's image (and mask, where the reader did not read it)."""
    rel = os.path.relpath(s.image_path, root)
    try:
        image = read_image(s.image_path)
    except UnreadableImage as exc:
        return [undecodable(s.id, rel, "image", exc)]
    h, w = image.shape[:2]
    problems = []
    if s.size is not None and s.size != (h, w):
        problems.append(Problem(s.id, rel, f"image is {w}x{h} but the annotation says {s.size[1]}x{s.size[0]}", False))
    if s.mask_path is not None and not s.boxes_from_mask:
        problems.extend(_annotation_mask_problems(root, s.id, s.mask_path, s.size or (h, w)))
    b = s.boxes
    tiny = ((b[:, 2] - b[:, 0]) < 0.01 * w) | ((b[:, 3] - b[:, 1]) < 0.01 * h)
    for box in b[tiny]:
        problems.append(Problem(s.id, rel, f"box {box.tolist()} is under 1% of the image side: annotation error?", False))
    return problems


def _annotation_mask_problems(root: Path, item: str, mask_path: Path, size: tuple[int, int]) -> list[Problem]:
    """A mask beside boxes from an annotation file (Kvasir-SEG): not used for training, so
    its problems are reported without skipping the sample."""
    rel = os.path.relpath(mask_path, root)
    try:
        mask = read_grayscale(mask_path)
    except UnreadableImage as exc:
        return [Problem(item, rel, f"mask cannot be decoded: {exc.detail}", False)]
    if mask.shape != size:
        return [mask_size_problem(item, rel, mask.shape, size,
                                  f" in {KVASIR_BOXES_FILE}: the boxes come from there, the mask is not used")]
    if not (mask >= MASK_THRESHOLD).any():
        return [Problem(item, rel, "mask is empty", False)]
    return []


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


def _check_splits(index: DatasetIndex) -> tuple[dict[str, dict[str, int]], list[Problem], list[str]]:
    """Per split: listed and usable counts; unknown ids, empty splits and overlaps as problems."""
    split_dir = index.root / SPLITS_DIR
    if not split_dir.is_dir():
        return {}, [], []
    usable = {s.id for s in index.samples}
    negative = {s.id for s in index.negatives}
    splits, problems, empty = {}, [], []
    members = {f.stem: read_split_ids(index.root, f.stem) for f in sorted(split_dir.glob("*.txt"))}
    for name, ids in members.items():
        splits[name] = {"listed": len(ids), "usable": sum(i in usable for i in ids),
                        "negatives": sum(i in negative for i in ids)}
        problems.extend(index.unknown_ids(ids, name))
        if not splits[name]["usable"]:
            problems.append(Problem("", f"{SPLITS_DIR}/{name}.txt", "split has no usable samples", False))
            empty.append(f"split {name}")
    names = list(members)
    for a in range(len(names)):
        for b in range(a + 1, len(names)):
            overlap = sorted(set(members[names[a]]) & set(members[names[b]]))
            if overlap:
                shown = ", ".join(overlap[:3]) + (" ..." if len(overlap) > 3 else "")
                problems.append(Problem("", SPLITS_DIR, f"splits {names[a]} and {names[b]} share "
                                                        f"{len(overlap)} ids ({shown})", False))
    return splits, problems, empty


def check_dataset(root: str | os.PathLike[str], show_progress: bool = True) -> dict[str, Any]:
    """The ``data check`` report: counts, box statistics, splits and every problem.
    ``empty`` names the dataset or splits with no usable sample (``--strict`` fails on them)."""
    index = open_checked(root, show_progress=show_progress)
    splits, split_problems, empty = _check_splits(index)
    problems = index.problems + split_problems
    if not index.samples:
        problems.append(Problem("", str(index.root), "the dataset has no usable samples", False))
        empty.insert(0, "dataset")
    return {
        "root": str(Path(root)),
        "format": index.format,
        "classes": list(index.class_names),
        "images": len(index.samples),
        "negatives": len(index.negatives),
        "splits": splits,
        **_box_stats(index),
        "problems": [str(p) for p in problems],
        "skipped": sorted({p.item for p in problems if p.skipped}),
        "empty": empty,
    }


def format_report(report: dict[str, Any]) -> str:
    lines = [f"{report['root']} ({report['format']}): {report['images']} usable images "
             f"({report['negatives']} of them polyp-free), classes {report['classes']}"]
    if "boxes" in report:
        lines.append(f"boxes: {report['boxes']}; per image: {report['boxes_per_image']}")
        lines.append(f"box width / image width  p5 p50 p95: {report['relative_width_p5_p50_p95']}")
        lines.append(f"box height / image height p5 p50 p95: {report['relative_height_p5_p50_p95']}")
    for name, s in report["splits"].items():
        lines.append(f"split {name}: {s['listed']} listed, {s['usable']} usable ({s['negatives']} polyp-free)")
    lines.append(f"problems: {len(report['problems'])} ({len(report['skipped'])} items skipped)")
    lines.extend(f"  {p}" for p in report["problems"])
    return "\n".join(lines)
