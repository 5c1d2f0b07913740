"""Polyp-free samples: crops mined from annotated frames, and folders of normal frames.

Kvasir-SEG has a polyp in every frame, so a detector trained on it never sees a frame
that should stay empty, and raises false alarms on normal mucosa. Each annotated frame
still shows plenty of mucosa away from its polyp: :func:`mine_crop` takes the largest
rectangle that is clear of the polyp (the mask, or the boxes where there is no mask,
grown by a safety margin) and of the black border around the scope's view. Training mines
its TRAINING split; evaluation mines the split it scores, the same way, so the two never
share a frame.

The search runs on a grid :data:`GRID` pixels coarse in which a cell is free only if every
pixel in it is, so a mined crop never touches the grown mask (``tests/test_negatives.py``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import numpy as np

from training.data.datasets import MASK_THRESHOLD, DatasetIndex, Problem, Sample, list_images, undecodable
from training.data.image_files import UnreadableImage, read_grayscale, read_image
from training.progress import progress

#: A pixel whose brightest channel is at most this belongs to the black border.
BORDER_LEVEL = 24
#: The polyp region grows by this share of the image's shorter side before mining.
MARGIN_FRACTION = 0.06
#: A crop's sides are at least this share of the image's shorter side (smaller: none).
MIN_SIDE_FRACTION = 0.3
#: A crop is at most this elongated.
MAX_ASPECT = 2.0
#: Grid step of the search, in pixels.
GRID = 8
NEGATIVE_SUFFIX = "#background"


@dataclass(frozen=True)
class MiningSettings:
    """How polyp-free crops are mined (the module constants are the defaults)."""

    border_level: int = BORDER_LEVEL
    margin_fraction: float = MARGIN_FRACTION
    min_side_fraction: float = MIN_SIDE_FRACTION
    max_aspect: float = MAX_ASPECT
    grid: int = GRID


def scope_view(image: np.ndarray, border_level: int = BORDER_LEVEL) -> np.ndarray:
    """Boolean ``[H, W]``: the pixels inside the endoscope's view (not its black border).

    The border is the dark region connected to the frame's edge: a dark lumen or shadow
    inside the view stays view (a mined negative may hold one: the model must learn that
    a dark fold is not a polyp). A median filter first, so overlay text in the border is
    not mistaken for view."""
    brightest = cv2.medianBlur(image.max(axis=2), 5)
    dark = (brightest <= border_level).astype(np.uint8)
    count, labels = cv2.connectedComponents(dark, connectivity=8)
    edge = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
    edge = edge[edge > 0]
    if count <= 1 or len(edge) == 0:
        return dark == 0
    return ~np.isin(labels, edge)


def polyp_region(sample: Sample, shape: tuple[int, int], margin_fraction: float = MARGIN_FRACTION) -> np.ndarray:
    """Boolean ``[H, W]``: the polyp (mask when the sample has one, else its boxes), grown by
    ``margin_fraction`` of the shorter side, so a crop does not cut through a polyp's rim."""
    h, w = shape
    region = np.zeros((h, w), np.uint8)
    if sample.mask_path is not None:
        try:
            mask = read_grayscale(sample.mask_path)
            if mask.shape != (h, w):
                mask = cv2.resize(mask, (w, h), interpolation=cv2.INTER_NEAREST)
            region |= (mask >= MASK_THRESHOLD).astype(np.uint8)
        except UnreadableImage:
            pass  # the boxes below still cover the polyp
    for x1, y1, x2, y2 in sample.boxes:
        region[int(np.floor(y1)):int(np.ceil(y2)), int(np.floor(x1)):int(np.ceil(x2))] = 1
    radius = max(1, round(margin_fraction * min(h, w)))
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
    return cv2.dilate(region, kernel).astype(bool)


def largest_free_rectangle(free: np.ndarray, max_aspect: float = MAX_ASPECT) -> tuple[int, int, int, int] | None:
    """The largest rectangle of True cells, at most ``max_aspect`` elongated, as
    ``(x1, y1, x2, y2)`` cell indices (exclusive ends); ``None`` when nothing is free.

    Every maximal free rectangle is visited (the histogram-stack method, row by row); the
    best aspect-limited rectangle lies inside one of them, so trimming each to the limit
    and keeping the largest finds it."""
    rows, cols = free.shape
    column_runs = np.zeros(cols, np.int64)
    best, best_area = None, 0
    for y in range(rows):
        column_runs = np.where(free[y], column_runs + 1, 0)
        heights = [*column_runs.tolist(), 0]  # a zero sentinel column closes every run
        stack: list[int] = []
        for x, height in enumerate(heights):
            while stack and heights[stack[-1]] >= height:
                h = heights[stack.pop()]
                left = stack[-1] + 1 if stack else 0
                width = x - left
                tw, th = min(width, int(max_aspect * h)), min(h, int(max_aspect * width))
                if tw * th > best_area:
                    best_area = tw * th
                    x1 = left + (width - tw) // 2
                    y2 = y + 1 - (h - th) // 2
                    best = (x1, y2 - th, x1 + tw, y2)
            stack.append(x)
    return best


def mine_crop(sample: Sample, image: np.ndarray, settings: MiningSettings = MiningSettings()) -> tuple[int, int, int, int] | None:
    """The polyp-free crop of one frame in image pixels ``(x1, y1, x2, y2)``, or ``None``
    when no rectangle with both sides of at least ``min_side_fraction`` of the shorter
    side is clear."""
    h, w = image.shape[:2]
    free = scope_view(image, settings.border_level) & ~polyp_region(sample, (h, w), settings.margin_fraction)
    g = settings.grid
    rows, cols = h // g, w // g
    # A cell is free only if all of its pixels are: the minimum over each g x g block.
    cells = free[:rows * g, :cols * g].reshape(rows, g, cols, g).all(axis=(1, 3))
    rect = largest_free_rectangle(cells, settings.max_aspect)
    if rect is None:
        return None
    x1, y1, x2, y2 = (v * g for v in rect)
    min_side = settings.min_side_fraction * min(h, w)
    if x2 - x1 < min_side or y2 - y1 < min_side:
        return None
    return x1, y1, x2, y2


def mined_negatives(samples: list[Sample], settings: MiningSettings = MiningSettings(), *,
                    show_progress: bool = False) -> list[Sample]:
    """One polyp-free crop per annotated frame of ``samples`` where one fits, as negative
    samples (no boxes) whose ``crop`` says where; ids end in ``#background``. Frames already
    polyp-free are returned whole by the readers and are not mined again."""
    out = []
    for s in progress(samples, desc="mining polyp-free crops", enabled=show_progress):
        if s.is_negative:
            continue
        try:
            image = read_image(s.image_path)
        except UnreadableImage:
            continue  # data check reports it; the positives already leave it out
        rect = mine_crop(s, image, settings)
        if rect is not None:
            out.append(replace(s, id=s.id + NEGATIVE_SUFFIX, boxes=np.zeros((0, 4), np.float32),
                               labels=np.zeros(0, np.int64), mask_path=None, size=image.shape[:2],
                               boxes_from_mask=False, crop=rect))
    return out


def folder_negatives(folder: str | os.PathLike[str], *, show_progress: bool = False) -> tuple[list[Sample], list[Problem]]:
    """Every decodable image under ``folder`` (recursively) as a polyp-free sample; the
    ones that cannot be decoded as skipped problems. ``--negatives DIR`` uses this."""
    root = Path(folder)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such folder of polyp-free frames")
    paths = sorted(p for d in [root, *sorted(q for q in root.rglob("*") if q.is_dir())] for p in list_images(d))
    samples, problems = [], []
    for path in progress(paths, desc="reading polyp-free frames", enabled=show_progress):
        rel = str(path.relative_to(root))
        try:
            size = read_image(path).shape[:2]
        except UnreadableImage as exc:
            problems.append(undecodable(rel, rel, "image", exc))
            continue
        samples.append(Sample(rel, path, np.zeros((0, 4), np.float32), np.zeros(0, np.int64), size=size))
    if not samples:
        problems.append(Problem("", str(root), "no usable image in the folder of polyp-free frames", False))
    return samples, problems


def polyp_free_frames(index: DatasetIndex, folder: str | os.PathLike[str] | None, mine: bool, *,
                      show_progress: bool = False) -> tuple[list[Sample], list[Problem]]:
    """Every polyp-free sample a split offers, the same way for training and evaluation: its
    own negatives, a crop mined from each of its polyp frames (when ``mine``), and every
    frame of ``folder``; with the problems of that folder."""
    frames = list(index.negatives)
    if mine:
        frames += mined_negatives(index.positives, show_progress=show_progress)
    problems: list[Problem] = []
    if folder:
        samples, problems = folder_negatives(folder, show_progress=show_progress)
        frames += samples
    return frames, problems
