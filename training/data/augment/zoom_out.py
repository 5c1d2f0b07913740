"""Zoom-out: a frame shrunk onto a canvas of polyp-free mucosa, so its polyps become small.

Kvasir-SEG's polyps fill a median 14% of the frame; in a high-resolution frame of another
centre a flat polyp may fill well under 1%. Shrinking a frame to 0.3-0.6 of its size and
laying it on mucosa from OTHER frames makes polyps that small while keeping their boxes
exact (a scale and a shift). The scope's black border of the shrunk frame is made
transparent and its edge feathered, so the canvas shows through instead of a
picture-in-picture frame the model could learn to look for.

Two uses: :func:`zoom_out` is a training augmentation (training frames on training
canvases), and :mod:`training.evaluation.zoom_out_set` writes the evaluation set with it
(val frames on canvases mined from other val frames). The two are deliberately built differently, so that a model cannot score on
the evaluation set by recognising how it was made: the evaluation canvas is one mucosa
crop stretched (so blurrier than the frame) and the paste is feathered; the training
canvas is a 2x2 tiling of polyp-free crops shrunk (as sharp as the frame or sharper,
:func:`tiled_canvas`) and the paste has a hard edge.
"""

from __future__ import annotations

import cv2
import numpy as np

from training.data.augment.pipeline import Item
from training.data.negatives import scope_view

SCALE_RANGE = (0.3, 0.6)
#: Width of the feathered edge, as a share of the pasted frame's shorter side.
FEATHER_FRACTION = 0.04


def view_box(image: np.ndarray, boxes: np.ndarray) -> tuple[int, int, int, int]:
    """The bounding rectangle of the scope's view and of every box (boxes are never cut)."""
    ys, xs = np.nonzero(scope_view(image))
    h, w = image.shape[:2]
    if len(xs) == 0:
        x1, y1, x2, y2 = 0, 0, w, h
    else:
        x1, y1, x2, y2 = int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1
    if len(boxes):
        x1, y1 = min(x1, int(np.floor(boxes[:, 0].min()))), min(y1, int(np.floor(boxes[:, 1].min())))
        x2, y2 = max(x2, int(np.ceil(boxes[:, 2].max()))), max(y2, int(np.ceil(boxes[:, 3].max())))
    return max(0, x1), max(0, y1), min(w, x2), min(h, y2)


def feathered_alpha(view: np.ndarray, feather: int) -> np.ndarray:
    """Float alpha ``[H, W]``: 1 inside the view, 0 on the black border, ramping to 0 over
    ``feather`` pixels at the rectangle's edges (``feather == 0``: a hard edge)."""
    if feather <= 0:
        return view.astype(np.float32)
    h, w = view.shape
    ramp_x = np.clip((np.minimum(np.arange(w), np.arange(w)[::-1]) + 0.5) / max(feather, 1), 0, 1)
    ramp_y = np.clip((np.minimum(np.arange(h), np.arange(h)[::-1]) + 0.5) / max(feather, 1), 0, 1)
    soft_view = cv2.GaussianBlur(view.astype(np.float32), (0, 0), max(feather / 3, 0.5))
    return np.minimum(soft_view, np.minimum(ramp_y[:, None], ramp_x[None, :]))


def paste_shrunk(canvas: np.ndarray, item: Item, scale: float, x0: int, y0: int,
                 feather: float = FEATHER_FRACTION) -> Item:
    """``item``'s view (black border trimmed, boxes kept whole), shrunk by ``scale``, laid on
    ``canvas`` with its top-left corner at ``(x0, y0)``. Boxes move exactly: each
    coordinate becomes ``origin + (v - crop_origin) * real_scale`` per axis, where
    ``real_scale`` is the pasted size over the cropped size (rounding to whole pixels makes
    it differ from ``scale`` by under a pixel)."""
    cx1, cy1, cx2, cy2 = view_box(item.image, item.boxes)
    crop = item.image[cy1:cy2, cx1:cx2]
    view = scope_view(crop)
    ch, cw = crop.shape[:2]
    pw, ph = max(1, round(cw * scale)), max(1, round(ch * scale))
    H, W = canvas.shape[:2]
    if x0 < 0 or y0 < 0 or x0 + pw > W or y0 + ph > H:
        raise ValueError(f"a {pw}x{ph} paste at ({x0}, {y0}) does not fit a {W}x{H} canvas")
    small = cv2.resize(crop, (pw, ph), interpolation=cv2.INTER_AREA)
    small_view = cv2.resize(view.astype(np.uint8), (pw, ph), interpolation=cv2.INTER_NEAREST) > 0
    alpha = feathered_alpha(small_view, round(feather * min(pw, ph)))[:, :, None]
    out = canvas.copy()
    region = out[y0:y0 + ph, x0:x0 + pw].astype(np.float32)
    out[y0:y0 + ph, x0:x0 + pw] = np.clip(alpha * small + (1 - alpha) * region + 0.5, 0, 255).astype(np.uint8)
    sx, sy = pw / cw, ph / ch
    boxes = item.boxes.astype(np.float64).copy()
    if len(boxes):
        boxes[:, [0, 2]] = x0 + (boxes[:, [0, 2]] - cx1) * sx
        boxes[:, [1, 3]] = y0 + (boxes[:, [1, 3]] - cy1) * sy
    mask = None
    if item.mask is not None:  # moves with the picture (the augmentation tests follow it)
        mask = np.zeros((H, W), item.mask.dtype)
        mask[y0:y0 + ph, x0:x0 + pw] = cv2.resize(item.mask[cy1:cy2, cx1:cx2], (pw, ph),
                                                  interpolation=cv2.INTER_NEAREST)
    return Item(out, boxes.astype(np.float32).reshape(-1, 4), item.labels.copy(), mask)


def zoom_out(item: Item, canvas: np.ndarray, rng: np.random.Generator,
             scale_range: tuple[float, float] = SCALE_RANGE, feather: float = FEATHER_FRACTION) -> Item:
    """``item`` shrunk by a factor drawn from ``scale_range`` (relative to the canvas's
    size) at a random place on ``canvas`` (an image of polyp-free mucosa)."""
    H, W = canvas.shape[:2]
    h, w = item.image.shape[:2]
    fit = min(W / w, H / h)  # the scale at which the item would fill the canvas
    scale = fit * float(rng.uniform(*scale_range))
    cx1, cy1, cx2, cy2 = view_box(item.image, item.boxes)
    pw, ph = max(1, round((cx2 - cx1) * scale)), max(1, round((cy2 - cy1) * scale))
    x0 = int(rng.integers(0, W - pw + 1))
    y0 = int(rng.integers(0, H - ph + 1))
    return paste_shrunk(canvas, item, scale, x0, y0, feather)


def tiled_canvas(negatives: list[Item], size: int) -> np.ndarray:
    """A ``size x size`` canvas of four polyp-free items, each shrunk into a quadrant (the
    training zoom-out's background: sharp, unlike the evaluation set's stretched one)."""
    half = size // 2
    canvas = np.empty((size, size, 3), np.uint8)
    corners = [(0, 0), (half, 0), (0, half), (half, half)]
    for (x, y), item in zip(corners, negatives[:4]):
        w, h = size - half if x else half, size - half if y else half
        canvas[y:y + h, x:x + w] = cv2.resize(item.image, (w, h), interpolation=cv2.INTER_AREA)
    return canvas
