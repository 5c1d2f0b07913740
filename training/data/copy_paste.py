"""Copy-paste: polyps cut out along their masks and pasted, shrunk, onto other frames.

Kvasir's polyps are mostly large and each sits on its own patch of mucosa, so a network
can learn the patch as much as the polyp. Pasting a training polyp, cut along its mask,
small, onto another frame (often a polyp-free crop) gives small polyps on mucosa they were
never seen on: the two things other centres' high-resolution frames bring (Ghiasi et al.
2021, "Simple copy-paste is a strong data augmentation method"; YOLOv5/v8's ``copy_paste``).

It runs after the geometric steps and before the colour, blur, glare and border steps, so
a pasted polyp is lit, blurred and cut by the scope border with the frame around it. Its
edge is feathered: a hard seam would be a cue the network could learn instead of the
polyp. A sample without a mask (box-only formats) is cut as the ellipse inscribed in its
box, the usual polyp outline.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np

from training.data.augment import LETTERBOX_COLOUR, MIN_BOX_SIDE, Item

#: Placement tries per polyp before giving up (the frame may be full of boxes).
PLACEMENT_TRIES = 10
#: Pixels kept clear between a pasted polyp and the boxes already there.
CLEARANCE = 2
#: A pasted polyp must lie on the frame: at most this share of it over the letterbox
#: padding or the black scope border (no polyp floats outside the scope's view).
MAX_OFF_FRAME = 0.1
#: Pixels darker than this (every channel) count as scope border.
BORDER_LEVEL = 25


@dataclass(frozen=True)
class Cutout:
    """A polyp cut from a frame: its pixels (``h x w x 3`` uint8) and opacity (``h x w``
    float32, 1 inside the polyp, 0 outside), the crop being the polyp's box."""

    image: np.ndarray
    alpha: np.ndarray


def cutouts_from(item: Item, mask: np.ndarray | None) -> list[Cutout]:
    """One cutout per box of ``item``. ``mask`` (``H x W``, nonzero on polyps, the item's
    size) gives each polyp's outline; without it the ellipse inscribed in the box."""
    out = []
    h, w = item.image.shape[:2]
    for box in np.round(item.boxes).astype(int):
        x1, y1, x2, y2 = max(0, int(box[0])), max(0, int(box[1])), min(w, int(box[2])), min(h, int(box[3]))
        if x2 - x1 < MIN_BOX_SIDE or y2 - y1 < MIN_BOX_SIDE:
            continue
        if mask is not None:
            alpha = (mask[y1:y2, x1:x2] > 0).astype(np.float32)
        else:
            alpha = np.zeros((y2 - y1, x2 - x1), np.float32)
            cv2.ellipse(alpha, (((x2 - x1) / 2, (y2 - y1) / 2), (float(x2 - x1), float(y2 - y1)), 0.0), 1.0, -1)
        if alpha.any():
            out.append(Cutout(np.ascontiguousarray(item.image[y1:y2, x1:x2]), alpha))
    return out


def _feathered(alpha: np.ndarray) -> np.ndarray:
    """Soften the outline over about a pixel and a half: no seam for the network to find."""
    sigma = 1.5 if min(alpha.shape) >= 8 else 0.7
    return cv2.GaussianBlur(alpha, (0, 0), sigma)


def _off_frame(image: np.ndarray) -> np.ndarray:
    """Where ``image`` shows no mucosa: the letterbox padding (exactly its grey, as pasting
    runs before the colour steps) or the black scope border."""
    return (image == np.array(LETTERBOX_COLOUR, np.uint8)).all(axis=2) | (image.max(axis=2) < BORDER_LEVEL)


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
    shrunk polyp would be under ``MIN_BOX_SIDE`` or no place is found clear of the boxes and
    on the frame (not over the letterbox padding or the scope border)."""
    image, alpha = cutout.image, cutout.alpha
    turns = int(rng.integers(0, 4))
    image, alpha = np.rot90(image, turns), np.rot90(alpha, turns)
    if rng.random() < 0.5:
        image, alpha = image[:, ::-1], alpha[:, ::-1]
    factor = float(rng.uniform(*scale))
    ph, pw = max(1, round(alpha.shape[0] * factor)), max(1, round(alpha.shape[1] * factor))
    h, w = item.image.shape[:2]
    if min(ph, pw) < MIN_BOX_SIDE or ph > h or pw > w:
        return item
    small = cv2.resize(np.ascontiguousarray(image), (pw, ph), interpolation=cv2.INTER_AREA)
    opacity = _feathered(cv2.resize(np.ascontiguousarray(alpha), (pw, ph), interpolation=cv2.INTER_AREA))
    ys, xs = np.nonzero(opacity >= 0.5)
    if not len(xs):
        return item
    inner = np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], np.float32)  # box within the patch
    footprint = opacity >= 0.5
    off_frame = _off_frame(item.image)
    for _ in range(PLACEMENT_TRIES):
        x0, y0 = int(rng.integers(0, w - pw + 1)), int(rng.integers(0, h - ph + 1))
        box = inner + np.array([x0, y0, x0, y0], np.float32)
        if (_clear_of(box, item.boxes)
                and off_frame[y0:y0 + ph, x0:x0 + pw][footprint].mean() <= MAX_OFF_FRAME):
            break
    else:
        return item
    out = item.copy()
    region = out.image[y0:y0 + ph, x0:x0 + pw].astype(np.float32)
    blended = opacity[..., None] * small.astype(np.float32) + (1 - opacity[..., None]) * region
    out.image[y0:y0 + ph, x0:x0 + pw] = np.clip(np.round(blended), 0, 255).astype(np.uint8)
    out.boxes = np.concatenate([item.boxes.reshape(-1, 4), box[None]]).astype(np.float32)
    out.labels = np.concatenate([item.labels, [0]]).astype(item.labels.dtype)
    if out.mask is not None:
        out.mask[y0:y0 + ph, x0:x0 + pw][opacity >= 0.5] = 255
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
    the samples' masks (resized to the cached size, nearest neighbour)."""

    def __init__(self, load: Callable[[int], Item], mask_paths: list, count: int) -> None:
        self.load = load
        self.mask_paths = mask_paths
        self.count = count
        self._made: dict[int, list[Cutout]] = {}

    def cutouts(self, index: int) -> list[Cutout]:
        made = self._made.get(index)
        if made is None:
            from training.data.image_files import read_grayscale

            item = self.load(index)
            path = self.mask_paths[index]
            mask = None
            if path is not None:
                h, w = item.image.shape[:2]
                mask = cv2.resize(read_grayscale(path), (w, h), interpolation=cv2.INTER_NEAREST)
            made = self._made[index] = cutouts_from(item, mask)
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


def preview(data: str, out: str, size: int = 320, seed: int = 0) -> None:
    """A contact sheet of what copy-paste makes (``docs/accuracy/copy-paste-preview.jpg``): top
    row, polyp-free crops mined from training frames; bottom row, polyp frames; the second and
    fourth of each row in a mosaic. Every box drawn in green, pasted or original."""
    import dataclasses

    from training.data.augment import AugmentConfig
    from training.data.datasets import open_dataset
    from training.data.loader import ImageCache, TrainDataset
    from training.data.negatives import polyp_free_frames

    index = open_dataset(data, "train")
    index.samples = [s for s in index.samples if len(s.boxes)][:60]
    negatives = polyp_free_frames(index, None, True, show_progress=False)[0][:20]
    cache = ImageCache(index.samples + negatives, size)
    cfg = dataclasses.replace(AugmentConfig.other_scopes(), copy_paste=1.0)
    dataset = TrainDataset(cache, size, cfg, seed=seed, positives=len(index.samples), negative_share=0.25)
    tiles = []
    for k in range(8):
        at = len(index.samples) + k if k < 4 else k
        item = dataset.augment(at, np.random.default_rng((seed, k)), use_mosaic=k % 2 == 1)
        image = item.image.copy()
        for x1, y1, x2, y2 in item.boxes.astype(int):
            cv2.rectangle(image, (int(x1), int(y1)), (int(x2), int(y2)), (0, 255, 0), 1)
        tiles.append(image)
    cv2.imwrite(out, np.vstack([np.hstack(tiles[:4]), np.hstack(tiles[4:])]), [cv2.IMWRITE_JPEG_QUALITY, 85])


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="A contact sheet of copy-paste on training frames.")
    parser.add_argument("--data", required=True, help="dataset with a train split and masks (Kvasir-SEG)")
    parser.add_argument("--out", required=True, help="the image to write (.jpg)")
    parser.add_argument("--seed", type=int, default=0)
    a = parser.parse_args()
    preview(a.data, a.out, seed=a.seed)
    print(f"wrote {a.out}")
