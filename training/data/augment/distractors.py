"""Air bubbles and residue painted onto training frames, clear of the polyps: things a
colonoscope sees that are not polyps.

Every model the project has trained fires on the same polyp-free val frames: an air bubble
with a specular highlight (all twelve models of ``docs/accuracy.md``, "Where the false
alarms are"), small particles of residue and a clump of stool with glare. Kvasir-SEG's
frames were chosen for their polyps and are clean, so the polyp-free crops mined from them
hold few bubbles or residue, and the network has little reason to tell them from a small
round polyp. This module paints both, as background, wherever no polyp is:

- :func:`paint_bubble`: a translucent disc that magnifies the mucosa under it like a lens,
  with a thin bright rim stronger on one side and one specular spot, as the light source
  makes on a bubble of fluid;
- :func:`paint_residue`: an irregular yellow-brown blob with a mottled texture and soft
  edges, sometimes with a speck of glare.

:func:`add_distractors` places one to four of them, each clear of every polyp box by a
margin, and never changes a box, a label or a pixel inside a polyp box (the tests hold it
to that). Synthetic distractors are a stand-in for real frames that hold bubbles and
residue (``train --negatives DIR`` takes those when there are any): whether they teach
the network anything about real ones is measured, not assumed (``abl-distractors`` in
``training/ablations/plan.py``).
"""

from __future__ import annotations

import cv2
import numpy as np

from training.data.augment.copy_paste import off_frame
from training.data.augment.pipeline import Item

#: A bubble's radius, as a share of the frame's shorter side.
BUBBLE_RADIUS = (0.015, 0.07)
#: A residue blob's half-size, as a share of the frame's shorter side.
RESIDUE_SIZE = (0.025, 0.09)
#: Gap kept between a distractor and any polyp box, in pixels.
MARGIN = 4
#: Positions tried for each distractor before it is left out.
TRIES = 12
#: A distractor goes only where at least this share of its square shows mucosa: not the
#: black scope border, not the letterbox padding (nothing floats outside the view).
MIN_IN_VIEW = 0.9


def _check_inside(image: np.ndarray, cx: int, cy: int, r: int) -> None:
    h, w = image.shape[:2]
    if cx - r < 0 or cy - r < 0 or cx + r >= w or cy + r >= h:  # a negative slice start would wrap
        raise ValueError(f"a square of half-side {r} at ({cx}, {cy}) leaves the {w}x{h} frame")


def _patch_grid(r: int) -> tuple[np.ndarray, np.ndarray]:
    """Offsets from the patch centre, ``[2r+1, 2r+1]`` each."""
    ys, xs = np.mgrid[-r:r + 1, -r:r + 1].astype(np.float32)
    return xs, ys


def paint_bubble(image: np.ndarray, cx: int, cy: int, radius: int, rng: np.random.Generator) -> None:
    """Paint an air bubble of ``radius`` pixels centred at (cx, cy), in place. The caller
    keeps the disc (plus two pixels) inside the image."""
    r = radius + 2
    _check_inside(image, cx, cy, r)
    patch = image[cy - r:cy + r + 1, cx - r:cx + r + 1].astype(np.float32)
    xs, ys = _patch_grid(r)
    d = np.sqrt(xs ** 2 + ys ** 2)
    # Lens: inside the disc the mucosa is seen magnified (sampled nearer the centre).
    k = float(rng.uniform(0.6, 0.9))
    inside = np.clip(radius - d + 0.5, 0.0, 1.0)[:, :, None]
    lensed = cv2.remap(patch, (xs * k + r).astype(np.float32), (ys * k + r).astype(np.float32), cv2.INTER_LINEAR,
                       borderMode=cv2.BORDER_REFLECT)
    lensed = lensed * float(rng.uniform(1.0, 1.15))
    # Rim: a thin bright ring just inside the edge, stronger towards the light.
    light = float(rng.uniform(0, 2 * np.pi))
    width = max(1.0, radius * float(rng.uniform(0.06, 0.14)))
    towards = 0.55 + 0.45 * np.cos(np.arctan2(ys, xs) - light)
    rim = np.exp(-((d - radius + width) / width) ** 2) * towards * float(rng.uniform(0.45, 0.9))
    # One specular spot between the centre and the rim, on the light's side.
    spot = np.zeros_like(d)
    sx, sy = 0.5 * radius * np.cos(light), 0.5 * radius * np.sin(light)
    axes = (max(1, int(round(radius * 0.18))), max(1, int(round(radius * 0.12))))
    cv2.ellipse(spot, (int(round(r + sx)), int(round(r + sy))), axes, float(np.degrees(light)), 0, 360, 1.0, -1)
    spot = cv2.GaussianBlur(spot, (0, 0), max(0.6, radius * 0.05))
    out = patch * (1 - inside) + lensed * inside
    highlight = np.clip(rim + spot, 0.0, 1.0)[:, :, None] * inside
    out = out * (1 - highlight) + 255.0 * highlight
    image[cy - r:cy + r + 1, cx - r:cx + r + 1] = np.clip(np.rint(out), 0, 255).astype(np.uint8)


def paint_residue(image: np.ndarray, cx: int, cy: int, size: int, rng: np.random.Generator) -> None:
    """Paint an irregular residue blob of half-size ``size`` pixels at (cx, cy), in place.
    The caller keeps the square of half-side ``size`` inside the image."""
    r = size
    _check_inside(image, cx, cy, r)
    xs, ys = _patch_grid(r)
    stretch = float(rng.uniform(0.6, 1.0))
    turn = float(rng.uniform(0, np.pi))
    u = (xs * np.cos(turn) + ys * np.sin(turn)) / (r * 0.8)
    v = (-xs * np.sin(turn) + ys * np.cos(turn)) / (r * 0.8 * stretch)
    noise = cv2.GaussianBlur(rng.random(xs.shape).astype(np.float32), (0, 0), max(1.0, r / 5))
    noise = (noise - noise.mean()) / (noise.std() + 1e-6)
    shape = 1.0 - (u ** 2 + v ** 2) + 0.35 * noise
    alpha = cv2.GaussianBlur((shape > 0).astype(np.float32), (0, 0), max(0.7, r / 12))
    # Keep the blob inside the circle its square holds, fading over its outer sixth: the
    # painted pixels stay where the caller placed them, with no straight edge a network
    # could learn as the mark of a painted blob.
    alpha *= np.clip((r - np.sqrt(xs ** 2 + ys ** 2)) / max(1.0, r / 6), 0.0, 1.0)
    alpha *= float(rng.uniform(0.75, 0.95))
    hue = rng.uniform(12, 32)
    hsv = np.full(xs.shape + (3,), (hue, rng.uniform(110, 220), rng.uniform(100, 215)), np.float32)
    texture = cv2.GaussianBlur(rng.random(xs.shape).astype(np.float32), (0, 0), max(0.8, r / 10))
    hsv[:, :, 2] *= 0.7 + 0.6 * (texture - texture.min()) / (np.ptp(texture) + 1e-6)
    hsv = np.clip(hsv, 0, [179, 255, 255]).astype(np.uint8)
    colour = cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR).astype(np.float32)
    if rng.random() < 0.5:  # a speck of glare on the wet surface
        speck = np.zeros(xs.shape, np.float32)
        cv2.circle(speck, (int(rng.integers(r // 2, r + r // 2 + 1)), int(rng.integers(r // 2, r + r // 2 + 1))),
                   max(1, r // 8), 1.0, -1)
        speck = cv2.GaussianBlur(speck, (0, 0), 0.8)[:, :, None]
        colour = colour * (1 - speck) + 255.0 * speck
    patch = image[cy - r:cy + r + 1, cx - r:cx + r + 1].astype(np.float32)
    a = alpha[:, :, None]
    blended = np.rint(patch * (1 - a) + colour * a)
    image[cy - r:cy + r + 1, cx - r:cx + r + 1] = np.clip(blended, 0, 255).astype(np.uint8)


def _apart_from_boxes(boxes: np.ndarray, x1: int, y1: int, x2: int, y2: int) -> bool:
    """Whether the square [x1, x2) x [y1, y2) keeps :data:`MARGIN` pixels from every box."""
    if len(boxes) == 0:
        return True
    b = boxes
    apart = ((x2 + MARGIN <= b[:, 0]) | (x1 - MARGIN >= b[:, 2]) | (y2 + MARGIN <= b[:, 1]) | (y1 - MARGIN >= b[:, 3]))
    return bool(apart.all())


def add_distractors(item: Item, rng: np.random.Generator) -> Item:
    """``item`` with one to four bubbles (a cluster: each near the last) or one to three
    residue blobs painted clear of its polyp boxes, off its polyp mask (a polyp whose box
    an earlier step dropped, too little of it in view, is still no place for one) and
    inside the scope's view. Boxes, labels and mask are unchanged; a distractor with no
    such place in :data:`TRIES` tries is left out."""
    h, w = item.image.shape[:2]
    short = min(h, w)
    image = item.image.copy()
    outside = off_frame(item.image)
    bubbles = rng.random() < 0.6
    count = int(rng.integers(1, 5 if bubbles else 4))
    last: tuple[int, int] | None = None
    for _ in range(count):
        if bubbles:
            half = max(2, int(round(rng.uniform(*BUBBLE_RADIUS) * short)))
            extent = half + 2  # the painted square's half-side
        else:
            half = max(3, int(round(rng.uniform(*RESIDUE_SIZE) * short)))
            extent = half
        if 2 * extent + 1 > short:
            continue
        for _ in range(TRIES):
            if last is not None and bubbles and rng.random() < 0.7:  # bubbles gather
                cx = int(np.clip(last[0] + rng.normal(0, 3 * extent), extent, w - extent - 1))
                cy = int(np.clip(last[1] + rng.normal(0, 3 * extent), extent, h - extent - 1))
            else:
                cx, cy = int(rng.integers(extent, w - extent)), int(rng.integers(extent, h - extent))
            square = (cx - extent, cy - extent, cx + extent + 1, cy + extent + 1)
            x1, y1, x2, y2 = square
            if (_apart_from_boxes(item.boxes, *square) and outside[y1:y2, x1:x2].mean() <= 1 - MIN_IN_VIEW
                    and (item.mask is None or not item.mask[y1:y2, x1:x2].any())):
                (paint_bubble if bubbles else paint_residue)(image, cx, cy, half, rng)
                last = (cx, cy)
                break
    return Item(image, item.boxes, item.labels, item.mask)


if __name__ == "__main__":
    import dataclasses

    from training.data.augment.pipeline import AugmentConfig
    from training.data.augment.preview import preview_main

    raise SystemExit(preview_main("bubbles and residue", dataclasses.replace(AugmentConfig.other_scopes(),
                                                                             distractors=1.0),
                                  prog="python -m training.data.augment.distractors"))
