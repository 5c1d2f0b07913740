"""Small synthetic polyp data sets written on the fly (no real data needed).

Each image is a reddish textured background with one to three lighter elliptical
"polyps"; the mask marks the ellipses and the boxes are their exact extents.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np


def draw_sample(rng: np.random.Generator, h: int, w: int, max_polyps: int = 2):
    image = np.empty((h, w, 3), np.uint8)
    image[:] = (40, 50, 150)
    noise = rng.normal(0, 12, (h, w, 3))
    image = np.clip(image + noise, 0, 255).astype(np.uint8)
    mask = np.zeros((h, w), np.uint8)
    boxes = []
    for _ in range(int(rng.integers(1, max_polyps + 1))):
        for _attempt in range(20):
            ax, ay = int(rng.integers(w // 12, w // 4)), int(rng.integers(h // 12, h // 4))
            cx, cy = int(rng.integers(ax + 1, w - ax - 1)), int(rng.integers(ay + 1, h - ay - 1))
            box = (cx - ax, cy - ay, cx + ax + 1, cy + ay + 1)
            if all(box[2] < b[0] or box[0] > b[2] or box[3] < b[1] or box[1] > b[3] for b in boxes):
                break
        else:
            continue
        one = np.zeros_like(mask)
        cv2.ellipse(one, (cx, cy), (ax, ay), 0, 0, 360, 255, -1)
        ys, xs = np.nonzero(one)
        boxes.append((int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1))
        mask |= one
        image[one > 0] = np.clip(image[one > 0].astype(int) + (60, 90, 70), 0, 255).astype(np.uint8)
    return image, mask, boxes


def write_kvasir_like(root: Path, n: int = 24, seed: int = 0, size=(160, 200),
                      splits=None) -> Path:
    """A folder laid out like Kvasir-SEG: images/, masks/, kavsir_bboxes.json, splits/."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(exist_ok=True)
    (root / "splits").mkdir(exist_ok=True)
    meta = {}
    ids = []
    for i in range(n):
        h, w = size
        image, mask, boxes = draw_sample(rng, h, w)
        item = f"img{i:03d}"
        ids.append(item)
        cv2.imwrite(str(root / "images" / f"{item}.jpg"), image, [cv2.IMWRITE_JPEG_QUALITY, 95])
        cv2.imwrite(str(root / "masks" / f"{item}.png"), mask)
        meta[item] = {"height": h, "width": w, "bbox": [
            {"label": "polyp", "xmin": b[0], "ymin": b[1], "xmax": b[2], "ymax": b[3]} for b in boxes]}
    (root / "kavsir_bboxes.json").write_text(json.dumps(meta))
    splits = splits or {"train": ids[: n * 2 // 3], "val": ids[n * 2 // 3:], "test": ids[n * 2 // 3:]}
    for name, members in splits.items():
        (root / "splits" / f"{name}.txt").write_text("\n".join(members) + "\n")
    return root


def write_moving_clip(path: Path, frames: int, size: tuple[int, int] = (240, 320), fps: float = 25.0,
                      seed: int = 0, shift_every: int = 3) -> Path:
    """A Motion-JPEG AVI of one synthetic polyp scene sliding sideways by a pixel every
    ``shift_every`` frames; ``size`` is (height, width)."""
    h, w = size
    image, _, _ = draw_sample(np.random.default_rng(seed), h, w, max_polyps=1)
    writer = cv2.VideoWriter(str(path), cv2.CAP_OPENCV_MJPEG, cv2.VideoWriter_fourcc(*"MJPG"), fps, (w, h))
    for i in range(frames):
        writer.write(np.roll(image, (i // shift_every) % w, axis=1))
    writer.release()
    return path


def write_mask_folder(root: Path, n: int = 6, seed: int = 0, size=(120, 150)) -> Path:
    """An images/ + masks/ folder (CVC-ClinicDB style, PNG masks); returns ``root``."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(exist_ok=True)
    for i in range(n):
        image, mask, _ = draw_sample(rng, *size)
        cv2.imwrite(str(root / "images" / f"{i:03d}.png"), image)
        cv2.imwrite(str(root / "masks" / f"{i:03d}.png"), mask)
    return root


def write_yolo_folder(root: Path, n: int = 6, seed: int = 0, size=(120, 150)) -> Path:
    """An images/ + labels/ folder (normalised ``class cx cy w h`` lines); returns ``root``."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "labels").mkdir(exist_ok=True)
    h, w = size
    for i in range(n):
        image, _, boxes = draw_sample(rng, h, w)
        cv2.imwrite(str(root / "images" / f"{i:03d}.jpg"), image)
        lines = [f"0 {(x1 + x2) / 2 / w} {(y1 + y2) / 2 / h} {(x2 - x1) / w} {(y2 - y1) / h}" for x1, y1, x2, y2 in boxes]
        (root / "labels" / f"{i:03d}.txt").write_text("\n".join(lines) + "\n")
    return root


def truncate_file(path: Path, fraction: float = 0.5, zero_padding: int = 0) -> Path:
    """Cut ``path`` to ``fraction`` of its bytes (an interrupted copy), optionally padded with zeros."""
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * fraction)] + b"\0" * zero_padding)
    return path
