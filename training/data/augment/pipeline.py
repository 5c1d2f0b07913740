"""Augmentation for endoscopy frames: colour jitter, flips, 90-degree turns, scale and
translation, mosaic, and the letterbox every model input goes through.

Endoscopes see polyps at any orientation, so vertical flips and quarter turns are fair
(unlike for street scenes). Every geometric step moves boxes and, when given, the mask
with exactly the same transform, which is how the tests prove boxes stay on the polyp.
Images are HxWx3 uint8 (BGR, as OpenCV reads them); boxes ``[N, 4]`` xyxy pixels.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import cv2
import numpy as np

if TYPE_CHECKING:
    from training.data.augment.copy_paste import Cutout

LETTERBOX_COLOUR = (114, 114, 114)
#: Pixels darker than this (every channel) count as the scope's black border.
BORDER_LEVEL = 25
MIN_BOX_SIDE = 2.0
MIN_VISIBLE_FRACTION = 0.25


@dataclass
class Item:
    """An image with its boxes, labels and (optionally) the mask that moves with it."""

    image: np.ndarray
    boxes: np.ndarray
    labels: np.ndarray
    mask: np.ndarray | None = None

    def copy(self) -> Item:
        return Item(self.image.copy(), self.boxes.copy(), self.labels.copy(),
                    None if self.mask is None else self.mask.copy())


@dataclass(frozen=True)
class AugmentConfig:
    hsv_h: float = 0.015
    hsv_s: float = 0.6
    hsv_v: float = 0.35
    flip_lr: float = 0.5
    flip_ud: float = 0.5
    rot90: float = 0.5
    scale: float = 0.4       # zoom factor drawn from [1 - scale, 1 + scale]
    translate: float = 0.1   # shift up to this fraction of the output size
    mosaic: float = 1.0      # probability of a 4-image mosaic
    # Frames from other scopes and centres: small polyps, other colour, blur, glare, borders.
    zoom_out: float = 0.0    # probability of shrinking the frame onto polyp-free mucosa (needs negatives)
    zoom_out_min: float = 0.25
    zoom_out_max: float = 0.7
    white_balance: float = 0.0  # per-channel gain drawn from [1 - wb, 1 + wb]
    gamma: float = 0.0          # gamma drawn from [1 - g, 1 + g]
    blur: float = 0.0           # probability of a Gaussian or motion blur
    glare: float = 0.0          # probability of added specular highlights
    border: float = 0.0         # probability of a black scope border with random corner cuts
    copy_paste: float = 0.0     # probability of pasting 1-2 training polyps, shrunk, into the frame
    copy_paste_min: float = 0.15  # the pasted polyp's size as a share of its own, drawn from [min, max]
    copy_paste_max: float = 0.6
    distractors: float = 0.0    # probability of painting air bubbles or residue clear of the polyps

    @classmethod
    def other_scopes(cls) -> AugmentConfig:
        """The recipe for frames from other centres (issue 11): zoom-out, colour, blur,
        glare and border augmentation on top of the defaults."""
        return cls(zoom_out=0.3, white_balance=0.1, gamma=0.25, blur=0.2, glare=0.2, border=0.3)


def off_frame(image: np.ndarray) -> np.ndarray:
    """Boolean ``[H, W]``: where ``image`` shows no mucosa, the letterbox padding (exactly its
    grey: steps that paint into a frame, copy-paste and distractors, run before the colour
    steps) or the black scope border. What is pasted or painted must lie on the mucosa."""
    return (image == np.array(LETTERBOX_COLOUR, np.uint8)).all(axis=2) | (image.max(axis=2) < BORDER_LEVEL)


def letterbox_params(h: int, w: int, size: int) -> tuple[float, int, int]:
    """Scale and (left, top) padding that fit an ``h x w`` image into ``size x size``."""
    scale = min(size / h, size / w)
    new_w, new_h = round(w * scale), round(h * scale)
    return scale, (size - new_w) // 2, (size - new_h) // 2


def letterbox(item: Item, size: int) -> Item:
    """Resize keeping the aspect ratio, pad to a square with grey (mask with 0)."""
    h, w = item.image.shape[:2]
    scale, left, top = letterbox_params(h, w, size)
    matrix = np.array([[scale, 0, left], [0, scale, top]], dtype=np.float64)
    return warp(item, matrix, size, interpolation=cv2.INTER_LINEAR if scale > 1 else cv2.INTER_AREA)


def warp(item: Item, matrix: np.ndarray, size: int, interpolation: int = cv2.INTER_LINEAR) -> Item:
    """Apply an axis-aligned affine ``matrix`` (scale + shift) to everything; boxes are
    clipped to the output and those mostly pushed out of view are dropped."""
    image = cv2.warpAffine(item.image, matrix, (size, size), flags=interpolation,
                           borderValue=LETTERBOX_COLOUR)
    mask = None
    if item.mask is not None:
        mask = cv2.warpAffine(item.mask, matrix, (size, size), flags=cv2.INTER_NEAREST, borderValue=0)
    boxes = item.boxes * np.array([matrix[0, 0], matrix[1, 1]] * 2, np.float32)
    boxes = boxes + np.array([matrix[0, 2], matrix[1, 2]] * 2, np.float32)
    boxes, labels = clip_boxes(boxes, item.labels, size, size)
    return Item(image, boxes, labels, mask)


def clip_boxes(boxes: np.ndarray, labels: np.ndarray, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Clip to the image; drop boxes under ``MIN_BOX_SIDE`` or with less than
    ``MIN_VISIBLE_FRACTION`` of their area still visible."""
    if len(boxes) == 0:
        return boxes.reshape(0, 4).astype(np.float32), labels
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    clipped = boxes.copy()
    clipped[:, [0, 2]] = clipped[:, [0, 2]].clip(0, width)
    clipped[:, [1, 3]] = clipped[:, [1, 3]].clip(0, height)
    w = clipped[:, 2] - clipped[:, 0]
    h = clipped[:, 3] - clipped[:, 1]
    keep = (w >= MIN_BOX_SIDE) & (h >= MIN_BOX_SIDE) & (w * h >= MIN_VISIBLE_FRACTION * np.maximum(area, 1e-6))
    return clipped[keep].astype(np.float32), labels[keep]


def hsv_jitter(item: Item, rng: np.random.Generator, cfg: AugmentConfig) -> Item:
    """Random gains on hue, saturation and value (lighting and tissue colour vary)."""
    gains = rng.uniform(-1, 1, 3) * (cfg.hsv_h, cfg.hsv_s, cfg.hsv_v) + 1
    hue, sat, val = cv2.split(cv2.cvtColor(item.image, cv2.COLOR_BGR2HSV))
    x = np.arange(256, dtype=np.float32)
    lut_h = ((x * gains[0]) % 180).astype(np.uint8)
    lut_s = np.clip(x * gains[1], 0, 255).astype(np.uint8)
    lut_v = np.clip(x * gains[2], 0, 255).astype(np.uint8)
    merged = cv2.merge((cv2.LUT(hue, lut_h), cv2.LUT(sat, lut_s), cv2.LUT(val, lut_v)))
    return Item(cv2.cvtColor(merged, cv2.COLOR_HSV2BGR), item.boxes, item.labels, item.mask)


def flip_lr(item: Item) -> Item:
    w = item.image.shape[1]
    boxes = item.boxes.copy()
    boxes[:, [0, 2]] = w - item.boxes[:, [2, 0]]
    mask = None if item.mask is None else item.mask[:, ::-1].copy()
    return Item(item.image[:, ::-1].copy(), boxes, item.labels, mask)


def flip_ud(item: Item) -> Item:
    h = item.image.shape[0]
    boxes = item.boxes.copy()
    boxes[:, [1, 3]] = h - item.boxes[:, [3, 1]]
    mask = None if item.mask is None else item.mask[::-1].copy()
    return Item(item.image[::-1].copy(), boxes, item.labels, mask)


def rotate90(item: Item, turns: int) -> Item:
    """Rotate counter-clockwise by ``turns`` quarter turns (as ``np.rot90``)."""
    out = item
    for _ in range(turns % 4):
        w = out.image.shape[1]
        b = out.boxes
        # A point (x, y) moves to (y, w - x) under one counter-clockwise turn.
        boxes = np.stack([b[:, 1], w - b[:, 2], b[:, 3], w - b[:, 0]], axis=1).astype(np.float32)
        mask = None if out.mask is None else np.ascontiguousarray(np.rot90(out.mask))
        out = Item(np.ascontiguousarray(np.rot90(out.image)), boxes, out.labels, mask)
    return out


def random_affine(item: Item, size: int, rng: np.random.Generator, cfg: AugmentConfig,
                  centre: tuple[float, float] | None = None) -> Item:
    """Random zoom and shift, producing a ``size x size`` crop around ``centre``
    (default: the middle of the input)."""
    h, w = item.image.shape[:2]
    cx, cy = centre if centre is not None else (w / 2, h / 2)
    zoom = rng.uniform(1 - cfg.scale, 1 + cfg.scale)
    tx = rng.uniform(-cfg.translate, cfg.translate) * size
    ty = rng.uniform(-cfg.translate, cfg.translate) * size
    matrix = np.array([[zoom, 0, size / 2 - zoom * cx + tx],
                       [0, zoom, size / 2 - zoom * cy + ty]], dtype=np.float64)
    return warp(item, matrix, size)


def mosaic(items: list[Item], size: int, rng: np.random.Generator) -> Item:
    """Four letterboxed images on a ``2*size`` canvas split at a random centre."""
    canvas_size = 2 * size
    xc, yc = (int(rng.uniform(0.5 * size, 1.5 * size)) for _ in range(2))
    image = np.full((canvas_size, canvas_size, 3), LETTERBOX_COLOUR, np.uint8)
    with_mask = all(it.mask is not None for it in items)
    mask = np.zeros((canvas_size, canvas_size), np.uint8) if with_mask else None
    all_boxes, all_labels = [], []
    for quadrant, it in enumerate(items[:4]):
        h, w = it.image.shape[:2]
        # Place each image so that its inner corner touches the mosaic centre.
        x0 = xc - w if quadrant in (0, 2) else xc
        y0 = yc - h if quadrant in (0, 1) else yc
        dst_x1, dst_y1 = max(x0, 0), max(y0, 0)
        dst_x2, dst_y2 = min(x0 + w, canvas_size), min(y0 + h, canvas_size)
        src = (slice(dst_y1 - y0, dst_y2 - y0), slice(dst_x1 - x0, dst_x2 - x0))
        image[dst_y1:dst_y2, dst_x1:dst_x2] = it.image[src]
        if mask is not None:
            mask[dst_y1:dst_y2, dst_x1:dst_x2] = it.mask[src]
        boxes = it.boxes + np.array([x0, y0, x0, y0], np.float32)
        # Clip to this image's visible window so boxes never spill onto a neighbour.
        b, lab = clip_boxes(boxes - [dst_x1, dst_y1, dst_x1, dst_y1], it.labels,
                            dst_y2 - dst_y1, dst_x2 - dst_x1)
        all_boxes.append(b + [dst_x1, dst_y1, dst_x1, dst_y1])
        all_labels.append(lab)
    boxes = np.concatenate(all_boxes).astype(np.float32).reshape(-1, 4)
    return Item(image, boxes, np.concatenate(all_labels), mask)


def colour_cast(item: Item, rng: np.random.Generator, cfg: AugmentConfig) -> Item:
    """Per-channel gains (white balance) and a gamma curve: scopes and light sources differ."""
    gains = 1 + rng.uniform(-cfg.white_balance, cfg.white_balance, 3)
    gamma = 1 + rng.uniform(-cfg.gamma, cfg.gamma)
    x = np.arange(256, dtype=np.float32) / 255.0
    luts = [np.clip(255.0 * (x ** gamma) * g, 0, 255).astype(np.uint8) for g in gains]
    image = cv2.merge([cv2.LUT(c, lut) for c, lut in zip(cv2.split(item.image), luts)])
    return Item(image, item.boxes, item.labels, item.mask)


def blur(item: Item, rng: np.random.Generator) -> Item:
    """Defocus (Gaussian) or camera motion (a line kernel at a random angle)."""
    if rng.random() < 0.5:
        image = cv2.GaussianBlur(item.image, (0, 0), float(rng.uniform(0.6, 2.0)))
    else:
        length = int(rng.integers(3, 10))
        kernel = np.zeros((length, length), np.float32)
        kernel[length // 2, :] = 1.0 / length
        turn = cv2.getRotationMatrix2D(((length - 1) / 2, (length - 1) / 2), float(rng.uniform(0, 180)), 1.0)
        kernel = cv2.warpAffine(kernel, turn, (length, length))
        image = cv2.filter2D(item.image, -1, kernel / max(kernel.sum(), 1e-6))
    return Item(image, item.boxes, item.labels, item.mask)


def glare(item: Item, rng: np.random.Generator, on_frame: np.ndarray) -> Item:
    """A few specular highlights: small saturated white ellipses with soft edges, as the
    light source makes on wet mucosa (and on polyps).

    ``on_frame`` (boolean ``[H, W]``) is where the mucosa is: the light is never reflected
    by the letterbox padding or the black scope border, so highlights are centred on it and
    cut off at its edge. The pipeline takes it before the colour steps, while the padding
    still has its exact grey (``off_frame``)."""
    h, w = item.image.shape[:2]
    ys, xs = np.nonzero(on_frame)
    if not len(ys):
        return item  # nothing but padding and border: no light to reflect
    layer = np.zeros((h, w), np.float32)
    for _ in range(int(rng.integers(1, 7))):
        axes = (int(rng.integers(1, max(2, w // 30))), int(rng.integers(1, max(2, h // 30))))
        pick = int(rng.integers(0, len(ys)))
        cv2.ellipse(layer, (int(xs[pick]), int(ys[pick])), axes, float(rng.uniform(0, 180)), 0, 360, 1.0, -1)
    alpha = (cv2.GaussianBlur(layer, (0, 0), 1.0) * on_frame)[:, :, None]
    image = (item.image * (1 - alpha) + 255 * alpha).astype(np.uint8)
    return Item(image, item.boxes, item.labels, item.mask)


def scope_border(item: Item, rng: np.random.Generator) -> Item:
    """Black corners cut at random depths, as another scope's view outline would leave.
    Each cut stops short of every box (a polyp is inside the view it was seen in), so the
    boxes stay exactly as they were."""
    h, w = item.image.shape[:2]
    b = item.boxes
    # A corner triangle {distance along both edges < cut} misses a box while the cut is at
    # most the box's nearest corner distance (x + y for the top-left corner, and so on).
    limits = [np.inf] * 4 if len(b) == 0 else [
        float((b[:, 0] + b[:, 1]).min()), float((w - b[:, 2] + b[:, 1]).min()),
        float((b[:, 0] + h - b[:, 3]).min()), float((w - b[:, 2] + h - b[:, 3]).min())]
    cut = [int(min(rng.uniform(0.05, 0.3) * min(h, w), max(limit, 0))) for limit in limits]
    view = np.full((h, w), 255, np.uint8)
    corners = [[(0, 0), (cut[0], 0), (0, cut[0])], [(w, 0), (w - cut[1], 0), (w, cut[1])],
               [(0, h), (cut[2], h), (0, h - cut[2])], [(w, h), (w - cut[3], h), (w, h - cut[3])]]
    for c, tri in zip(cut, corners):
        if c > 1:
            cv2.fillConvexPoly(view, np.array(tri, np.int32), 0)
    image = item.image.copy()
    image[view == 0] = 0
    mask = None if item.mask is None else np.where(view > 0, item.mask, 0).astype(item.mask.dtype)
    return Item(image, item.boxes, item.labels, mask)


class Augmenter:
    """The training-time pipeline: (zoom-out | mosaic -> affine | letterbox -> affine) ->
    copy-paste -> distractors -> HSV -> colour cast -> blur -> glare -> scope border -> flips -> turns.
    Zoom-out needs a ``canvas`` (polyp-free items) and applies only to items with a polyp;
    copy-paste needs ``cutouts`` (training polyps) and applies to any item.

    ``load`` returns the item at an index already resized so its longer side equals the
    input size (the training cache stores exactly that).
    """

    def __init__(self, size: int, cfg: AugmentConfig, load: Callable[[int], Item], count: int,
                 partners: Callable[[np.random.Generator, int], list[int]] | None = None,
                 canvas: Callable[[np.random.Generator], Item] | None = None,
                 cutouts: Callable[[np.random.Generator], Cutout | None] | None = None) -> None:
        self.size = size
        self.cfg = cfg
        self.load = load
        self.count = count
        #: Draws the other mosaic tiles (default: uniformly among all items).
        self.partners = partners or (lambda rng, n: rng.integers(0, count, n).tolist())
        #: Draws a polyp-free item to zoom out onto (``None``: no zoom-out).
        self.canvas = canvas
        #: Draws a training polyp to paste (``None``: no copy-paste).
        self.cutouts = cutouts

    def __call__(self, index: int, rng: np.random.Generator, use_mosaic: bool = True) -> Item:
        from training.data.augment.copy_paste import copy_paste
        from training.data.augment.distractors import add_distractors
        from training.data.augment.zoom_out import tiled_canvas, zoom_out

        cfg = self.cfg
        item = self.load(index)
        if self.canvas is not None and len(item.boxes) and rng.random() < cfg.zoom_out:
            background = tiled_canvas([self.canvas(rng) for _ in range(4)], self.size)
            item = zoom_out(item, background, rng, (cfg.zoom_out_min, cfg.zoom_out_max), feather=0.0)
        elif use_mosaic and rng.random() < cfg.mosaic:
            picks = [index, *self.partners(rng, 3)]
            item = mosaic([self.load(i) for i in picks], self.size, rng)
            item = random_affine(item, self.size, rng, cfg)
        else:
            item = random_affine(letterbox(item, self.size), self.size, rng, cfg)
        if self.cutouts is not None and cfg.copy_paste and rng.random() < cfg.copy_paste:
            item = copy_paste(item, self.cutouts, rng, (cfg.copy_paste_min, cfg.copy_paste_max))
        if cfg.distractors and rng.random() < cfg.distractors:
            item = add_distractors(item, rng)
        before_colour = item.image  # the colour steps make new images; glare's mask needs the padding's exact grey
        item = hsv_jitter(item, rng, cfg)
        if cfg.white_balance or cfg.gamma:
            item = colour_cast(item, rng, cfg)
        if rng.random() < cfg.blur:
            item = blur(item, rng)
        if rng.random() < cfg.glare:
            item = glare(item, rng, ~off_frame(before_colour))
        if rng.random() < cfg.border:
            item = scope_border(item, rng)
        if rng.random() < cfg.flip_lr:
            item = flip_lr(item)
        if rng.random() < cfg.flip_ud:
            item = flip_ud(item)
        if rng.random() < cfg.rot90:
            item = rotate90(item, int(rng.integers(1, 4)))
        return item
