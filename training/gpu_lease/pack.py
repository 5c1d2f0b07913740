"""A compact copy of Kvasir-SEG to carry to a GPU lease.

The lease receives the repository's working tree and at most 64 MiB in all; the dataset
beside the repository does not travel, and at full size (55 MB) it does not fit beside the
code. Frames are stored with their longer side at most ``max_side`` pixels (training runs
at 320-416 px, and the loader caches frames at the training size anyway), the boxes and
sizes in ``kavsir_bboxes.json`` scaled to match, masks thresholded and stored as PNG (a
binary mask loses nothing that way), and the split files copied. What a model scores on the
copy is close to, not equal to, what it scores on the original frames: final figures are
always re-scored on the original data here.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np

from training.data.datasets import KVASIR_BOXES_FILE, MASK_THRESHOLD, find_image
from training.progress import progress

DEFAULT_MAX_SIDE = 448
DEFAULT_QUALITY = 85


def pack_kvasir(src: str | Path, dst: str | Path, max_side: int = DEFAULT_MAX_SIDE, quality: int = DEFAULT_QUALITY,
                show_progress: bool = True) -> dict:
    """Write the compact copy of ``src`` (Kvasir-SEG as released) to ``dst``; returns a
    summary (frames, bytes). ``dst`` is replaced whole: written beside it, then renamed."""
    src, dst = Path(src), Path(dst)
    meta = json.loads((src / KVASIR_BOXES_FILE).read_text())
    part = dst.with_name(dst.name + ".part")
    if part.exists():
        shutil.rmtree(part)
    (part / "images").mkdir(parents=True)
    (part / "masks").mkdir()
    shutil.copytree(src / "splits", part / "splits")
    packed = {}
    for item, entry in progress(list(meta.items()), desc="packing", enabled=show_progress):
        image_path = find_image(src / "images", item)
        if image_path is None:
            continue  # the reader reports it on the original; nothing to copy
        image = cv2.imread(str(image_path), cv2.IMREAD_COLOR)
        if image is None:
            raise ValueError(f"{image_path}: cannot decode the image")
        h, w = image.shape[:2]
        scale = min(1.0, max_side / max(h, w))
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        if scale < 1.0:
            image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
        cv2.imwrite(str(part / "images" / f"{item}.jpg"), image, [cv2.IMWRITE_JPEG_QUALITY, quality])
        mask_path = find_image(src / "masks", item)
        if mask_path is not None:
            mask = cv2.imread(str(mask_path), cv2.IMREAD_GRAYSCALE)
            if mask is None:
                raise ValueError(f"{mask_path}: cannot decode the mask")
            binary = np.where(mask >= MASK_THRESHOLD, 255, 0).astype(np.uint8)
            binary = cv2.resize(binary, size, interpolation=cv2.INTER_NEAREST) if scale < 1.0 else binary
            cv2.imwrite(str(part / "masks" / f"{item}.png"), binary, [cv2.IMWRITE_PNG_COMPRESSION, 9])
        sx, sy = size[0] / w, size[1] / h
        packed[item] = {**entry, "height": size[1], "width": size[0],
                        "bbox": [{**b, "xmin": b["xmin"] * sx, "ymin": b["ymin"] * sy, "xmax": b["xmax"] * sx,
                                  "ymax": b["ymax"] * sy} for b in entry.get("bbox", [])]}
    (part / KVASIR_BOXES_FILE).write_text(json.dumps(packed))
    (part / "PACKED.json").write_text(json.dumps({"source": str(src.resolve()), "max_side": max_side,
                                                  "jpeg_quality": quality, "frames": len(packed)}, indent=2))
    if dst.exists():
        shutil.rmtree(dst)
    part.rename(dst)
    total = sum(f.stat().st_size for f in dst.rglob("*") if f.is_file())
    return {"frames": len(packed), "bytes": total, "folder": str(dst)}
