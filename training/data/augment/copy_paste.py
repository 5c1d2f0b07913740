"""Copy-paste: polyps cut out along their masks and pasted, shrunk, onto other frames.

Kvasir's polyps are mostly large and each sits on its own patch of mucosa, so a network
can learn the patch as much as the polyp. Pasting a training polyp, cut along its mask,
small, onto another frame (often a polyp-free crop) gives small polyps on mucosa they were
never seen on: the two things other centres' high-resolution frames bring (Ghiasi et al.
2021, "Simple copy-paste is a strong data augmentation method"; YOLOv5/v8's ``copy_paste``).

It runs after the geometric steps and before the colour, blur and glare steps, so a
pasted polyp is lit and blurred with the frame around it (the later scope-border step
stops short of every box, pasted ones included). Its edge is feathered: a hard seam would
be a cue the network could learn instead of the polyp. A sample without a usable mask
(box-only formats, a mask that cannot be read or does not fit its image) is cut as the
ellipse inscribed in its box, the usual polyp outline.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np

from training.data.augment.pipeline import MIN_BOX_SIDE, Item, off_frame
from training.data.datasets import MASK_THRESHOLD

#: Placement tries per polyp before giving up (the frame may be full of boxes).
PLACEMENT_TRIES = 10
#: Pixels kept clear between a pasted polyp and the boxes already there.
CLEARANCE = 2
#: A pasted polyp must lie on the frame: at most this share of it over the letterbox
#: padding or the black scope border (no polyp floats outside the scope's view).
MAX_OFF_FRAME = 0.1
#: The smallest pasted polyp, box side in input pixels: the loss matches a box to anchors
#: within 4x of it, and the smallest fitted anchor is about 28 px, so a smaller polyp would
#: be taught as background (the zoom-out set's smallest polyp is 9 px).
MIN_PASTED_SIDE = 8


@dataclass(frozen=True)
class Cutout:
    """A polyp cut from a frame: its pixels (``h x w x 3`` uint8), opacity (``h x w``
    float32, 1 inside the polyp, 0 outside), the crop being the polyp's box, and its class."""

    image: np.ndarray
    alpha: np.ndarray
    label: int = 0


def cutouts_from(item: Item, mask: np.ndarray | None) -> list[Cutout]:
    """One cutout per box of ``item``. ``mask`` (``H x W``, the item's size, polyp where
    ``>= MASK_THRESHOLD`` as the readers take it) gives each polyp's outline; without it, or
    where nothing inside a box passes, the ellipse inscribed in the box."""
    out = []
    h, w = item.image.shape[:2]
    for box, label in zip(np.round(item.boxes).astype(int), item.labels, strict=True):
        x1, y1, x2, y2 = max(0, int(box[0])), max(0, int(box[1])), min(w, int(box[2])), min(h, int(box[3]))
        if x2 - x1 < MIN_BOX_SIDE or y2 - y1 < MIN_BOX_SIDE:
            continue
        alpha = (mask[y1:y2, x1:x2] >= MASK_THRESHOLD).astype(np.float32) if mask is not None else None
        if alpha is None or not alpha.any():
            alpha = np.zeros((y2 - y1, x2 - x1), np.float32)
            cv2.ellipse(alpha, (((x2 - x1) / 2, (y2 - y1) / 2), (float(x2 - x1), float(y2 - y1)), 0.0), 1.0, -1)
        out.append(Cutout(np.ascontiguousarray(item.image[y1:y2, x1:x2]), alpha, int(label)))
    return out


#: Feathering width (Gaussian sigma, input pixels) and the margin around a patch that lets
#: the outline fade to zero even where the polyp touches its box.
FEATHER_SIGMA = 1.5
FEATHER_MARGIN = 5


def _feathered(image: np.ndarray, alpha: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The patch grown by :data:`FEATHER_MARGIN` (edge pixels repeated, opacity 0) and its
    outline softened over about a pixel and a half: no seam for the network to find, on
    the box's edges either."""
    m = FEATHER_MARGIN
    image = cv2.copyMakeBorder(image, m, m, m, m, cv2.BORDER_REPLICATE)
    alpha = cv2.copyMakeBorder(alpha, m, m, m, m, cv2.BORDER_CONSTANT, value=0.0)
    return image, cv2.GaussianBlur(alpha, (0, 0), FEATHER_SIGMA)


def _clear_of(box: np.ndarray, boxes: np.ndarray) -> bool:
    if not len(boxes):
        return True
    grown = boxes + np.array([-CLEARANCE, -CLEARANCE, CLEARANCE, CLEARANCE], np.float32)
    overlap_w = np.minimum(box[2], grown[:, 2]) - np.maximum(box[0], grown[:, 0])
    overlap_h = np.minimum(box[3], grown[:, 3]) - np.maximum(box[1], grown[:, 1])
    return bool(((overlap_w <= 0) | (overlap_h <= 0)).all())


def paste(item: Item, cutout: Cutout, rng: np.random.Generator, scale: tuple[float, float]) -> Item:
    """``item`` with ``cutout`` resized by a factor drawn from ``scale``, turned by a random
    quarter turn and flip, and blended in at a random place clear of its boxes; the new
    polyp's box is where the pasted outline is at least half opaque. Unchanged when the
    shrunk polyp would be under :data:`MIN_PASTED_SIDE` or no place is found clear of the
    boxes and on the frame (at most :data:`MAX_OFF_FRAME` of it over the letterbox padding
    or the scope border)."""
    image, alpha = cutout.image, cutout.alpha
    turns = int(rng.integers(0, 4))
    image, alpha = np.rot90(image, turns), np.rot90(alpha, turns)
    if rng.random() < 0.5:
        image, alpha = image[:, ::-1], alpha[:, ::-1]
    factor = float(rng.uniform(*scale))
    sh, sw = max(1, round(alpha.shape[0] * factor)), max(1, round(alpha.shape[1] * factor))
    small = cv2.resize(np.ascontiguousarray(image), (sw, sh), interpolation=cv2.INTER_AREA)
    small, opacity = _feathered(small, cv2.resize(np.ascontiguousarray(alpha), (sw, sh),
                                                  interpolation=cv2.INTER_AREA))
    ph, pw = opacity.shape
    h, w = item.image.shape[:2]
    ys, xs = np.nonzero(opacity >= 0.5)
    if not len(xs) or ph > h or pw > w:
        return item
    inner = np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], np.float32)  # box within the patch
    if min(inner[2] - inner[0], inner[3] - inner[1]) < MIN_PASTED_SIDE:
        return item
    footprint = opacity >= 0.5
    outside = off_frame(item.image)
    for _ in range(PLACEMENT_TRIES):
        x0, y0 = int(rng.integers(0, w - pw + 1)), int(rng.integers(0, h - ph + 1))
        box = inner + np.array([x0, y0, x0, y0], np.float32)
        if (_clear_of(box, item.boxes)
                and outside[y0:y0 + ph, x0:x0 + pw][footprint].mean() <= MAX_OFF_FRAME):
            break
    else:
        return item
    out = item.copy()
    region = out.image[y0:y0 + ph, x0:x0 + pw].astype(np.float32)
    blended = opacity[..., None] * small.astype(np.float32) + (1 - opacity[..., None]) * region
    out.image[y0:y0 + ph, x0:x0 + pw] = np.clip(np.round(blended), 0, 255).astype(np.uint8)
    out.boxes = np.concatenate([item.boxes.reshape(-1, 4), box[None]]).astype(np.float32)
    out.labels = np.concatenate([item.labels, [cutout.label]]).astype(item.labels.dtype)
    if out.mask is not None:  # a new instance value, as the masks that move with items number polyps
        out.mask[y0:y0 + ph, x0:x0 + pw][opacity >= 0.5] = min(255, int(out.mask.max()) + 1)
    return out


def copy_paste(item: Item, draw: Callable[[np.random.Generator], Cutout | None], rng: np.random.Generator,
               scale: tuple[float, float], most: int = 2) -> Item:
    """Paste 1 to ``most`` polyps drawn with ``draw`` (``None``: none available) into ``item``."""
    for _ in range(int(rng.integers(1, most + 1))):
        cutout = draw(rng)
        if cutout is not None:
            item = paste(item, cutout, rng, scale)
    return item


class CutoutBank:
    """The training polyps as cutouts, made on first use from the image cache's items and
    the samples' masks (resized to the cached size, nearest neighbour). A mask that cannot
    be read, or whose size is not its image's, is not used: ``data check`` reports those,
    and the polyp is cut as the ellipse in its box."""

    def __init__(self, load: Callable[[int], Item], samples: list) -> None:
        self.load = load
        self.samples = samples
        self.count = len(samples)
        self._made: dict[int, list[Cutout]] = {}

    def _mask(self, index: int, height: int, width: int) -> np.ndarray | None:
        from training.data.image_files import UnreadableImage, read_grayscale

        sample = self.samples[index]
        if sample.mask_path is None:
            return None
        try:
            mask = read_grayscale(sample.mask_path)
        except UnreadableImage:
            return None
        if sample.size is not None and mask.shape != tuple(sample.size):
            return None
        return cv2.resize(mask, (width, height), interpolation=cv2.INTER_NEAREST)

    def cutouts(self, index: int) -> list[Cutout]:
        made = self._made.get(index)
        if made is None:
            item = self.load(index)
            h, w = item.image.shape[:2]
            made = self._made[index] = cutouts_from(item, self._mask(index, h, w))
        return made

    def draw(self, rng: np.random.Generator) -> Cutout | None:
        if self.count == 0:
            return None
        polyps = self.cutouts(int(rng.integers(0, self.count)))
        return polyps[int(rng.integers(0, len(polyps)))] if polyps else None

    def fill(self) -> None:
        """Make every cutout now (before loader workers fork, so they share them)."""
        for i in range(self.count):
            self.cutouts(i)


if __name__ == "__main__":
    import dataclasses

    from training.data.augment.pipeline import AugmentConfig
    from training.data.augment.preview import preview_main

    raise SystemExit(preview_main("copy-paste", dataclasses.replace(AugmentConfig.other_scopes(), copy_paste=1.0),
                                  prog="python -m training.data.augment.copy_paste"))
