"""Zoom-out: a frame shrunk onto a canvas of polyp-free mucosa, so its polyps become small.

Kvasir-SEG's polyps fill a median 14% of the frame; in a high-resolution frame of another
centre a flat polyp may fill well under 1%. Shrinking a frame to 0.3-0.6 of its size and
laying it on mucosa from OTHER frames makes polyps that small while keeping their boxes
exact (a scale and a shift). The scope's black border of the shrunk frame is made
transparent and its edge feathered, so the canvas shows through instead of a
picture-in-picture frame the model could learn to look for.

Two uses: :func:`write_zoom_out_set` writes the evaluation set (from val frames, canvases
mined from other val frames) as a YOLO-label folder that ``polypscope val`` scores like
any other; and :func:`zoom_out` is a training augmentation (training frames on training
canvases). The two are deliberately built differently, so that a model cannot score on
the evaluation set by recognising how it was made: the evaluation canvas is one mucosa
crop stretched (so blurrier than the frame) and the paste is feathered; the training
canvas is a 2x2 tiling of polyp-free crops shrunk (as sharp as the frame or sharper,
:func:`tiled_canvas`) and the paste has a hard edge.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import cv2
import numpy as np

from training.data.augment.pipeline import Item
from training.data.datasets import Sample
from training.data.image_files import read_image
from training.data.negatives import mined_negatives, scope_view
from training.progress import progress

SCALE_RANGE = (0.3, 0.6)
MANIFEST = "zoom_out.json"  # how each image of a set was made; its presence marks a finished set
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


def canvas_from(negative: Item, height: int, width: int) -> np.ndarray:
    """A polyp-free image stretched to fill a ``width x height`` canvas."""
    return cv2.resize(negative.image, (width, height), interpolation=cv2.INTER_LINEAR)


def ensure_zoom_out_set(data: Path, out: Path, seed: int = 0) -> Path:
    """``out``, made from ``data``'s val split unless a set is already there (runs that are
    resumed or compared must be scored on one and the same set)."""
    if not (Path(out) / MANIFEST).is_file():
        from training.data.data_check import open_checked  # leaves out (and names) unreadable frames

        write_zoom_out_set(open_checked(Path(data), "val").samples, out, seed=seed)
    return Path(out)


def write_zoom_out_set(samples: list[Sample], out: str | os.PathLike[str], *, seed: int = 0,
                       scale_range: tuple[float, float] = SCALE_RANGE, show_progress: bool = False) -> dict:
    """For each sample with a polyp: the frame shrunk onto a canvas mined from ANOTHER
    frame of ``samples``, written as ``out/images/<id>.png`` and ``out/labels/<id>.txt``
    (YOLO: class cx cy w h, normalised), plus ``out/zoom_out.json`` recording how each was
    made. Deterministic for a seed. An earlier set in ``out`` is removed first
    (:func:`remove_previous_set`). Returns the manifest."""
    out = Path(out)
    remove_previous_set(out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "labels").mkdir(exist_ok=True)
    positives = [s for s in samples if not s.is_negative]
    canvases = mined_negatives(positives)
    if not canvases:
        raise ValueError("no polyp-free crop could be mined from these frames to make canvases")
    rng = np.random.default_rng(seed)
    manifest = {"seed": seed, "scale_range": list(scale_range), "images": {}}
    for s in progress(positives, desc="zoom-out set", enabled=show_progress):
        others = [c for c in canvases if not c.id.startswith(s.id + "#")]
        if not others:
            continue
        source = others[int(rng.integers(0, len(others)))]
        x1, y1, x2, y2 = source.crop
        image = read_image(s.image_path)
        h, w = image.shape[:2]
        canvas = cv2.resize(read_image(source.image_path)[y1:y2, x1:x2], (w, h), interpolation=cv2.INTER_LINEAR)
        made = zoom_out(Item(image, s.boxes.astype(np.float32), s.labels.copy()), canvas, rng, scale_range)
        cv2.imwrite(str(out / "images" / f"{s.id}.png"), made.image)
        b = made.boxes
        rows = [f"{int(c)} {(x1b + x2b) / 2 / w:.6f} {(y1b + y2b) / 2 / h:.6f} {(x2b - x1b) / w:.6f} {(y2b - y1b) / h:.6f}"
                for c, (x1b, y1b, x2b, y2b) in zip(made.labels, b)]
        (out / "labels" / f"{s.id}.txt").write_text("\n".join(rows) + "\n")
        manifest["images"][s.id] = {"canvas_from": source.id.split("#")[0], "boxes": np.round(b, 3).tolist()}
    (out / MANIFEST).write_text(json.dumps(manifest, indent=1))  # last: a set without it is incomplete
    return manifest


def remove_previous_set(out: Path) -> None:
    """Clear ``out`` for a new set: the files an earlier set recorded in its manifest go (a
    frame of it left behind would be scored with the new one), and nothing else is touched.
    A folder that holds anything but such a set is refused: ``--out`` pointed at a dataset
    by mistake must not lose a file."""
    if not out.exists() or not any(out.iterdir()):
        return
    manifest_file = out / MANIFEST
    if not manifest_file.is_file():
        raise ValueError(f"{out}: not empty and not a zoom-out set (no {MANIFEST}; an interrupted build leaves none): "
                         "write the set into a new or empty folder")
    ids = json.loads(manifest_file.read_text())["images"]
    manifest_file.unlink()  # from here the folder reads as incomplete until the new set is written
    for image_id in ids:
        for stale in (out / "images" / f"{image_id}.png", out / "labels" / f"{image_id}.txt"):
            stale.unlink(missing_ok=True)
