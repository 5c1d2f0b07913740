"""The zoom-out evaluation set: small polyps, as high-resolution frames of other centres
show them, made from Kvasir's val frames.

Each val frame with a polyp is shrunk onto a canvas of polyp-free mucosa mined from
ANOTHER val frame (:func:`~training.data.augment.zoom_out.zoom_out`, the training
augmentation's paste, feathered here and on a stretched canvas, so that a model cannot
score by recognising how the training frames were made), and written as a YOLO-label
folder that ``polypscope val`` scores like any other (``polypscope data zoom-out``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import cv2
import numpy as np

from training.data.augment.pipeline import Item
from training.data.augment.zoom_out import SCALE_RANGE, zoom_out
from training.data.datasets import Sample
from training.data.image_files import read_image
from training.data.negatives import mined_negatives
from training.progress import progress

MANIFEST = "zoom_out.json"  # how each image of a set was made; its presence marks a finished set


def ensure_zoom_out_set(data: Path, out: Path, seed: int = 0) -> Path:
    """``out``, made from ``data``'s val split unless a set is already there (runs that are
    resumed or compared must be scored on one and the same set)."""
    if not (Path(out) / MANIFEST).is_file():
        from training.data.data_check import open_checked  # leaves out (and names) unreadable frames

        write_zoom_out_set(open_checked(Path(data), "val").samples, out, seed=seed,
                           source={"data": str(Path(data).resolve()), "split": "val"})
    return Path(out)


def write_zoom_out_set(samples: list[Sample], out: str | os.PathLike[str], *, seed: int = 0,
                       scale_range: tuple[float, float] = SCALE_RANGE, show_progress: bool = False,
                       source: dict[str, str | None] | None = None) -> dict:
    """For each sample with a polyp: the frame shrunk onto a canvas mined from ANOTHER
    frame of ``samples``, written as ``out/images/<id>.png`` and ``out/labels/<id>.txt``
    (YOLO: class cx cy w h, normalised), plus ``out/zoom_out.json`` recording how each was
    made and, when given, which dataset and split the frames came from (``source``: a
    comparison that must never touch test checks it). Deterministic for a seed. An earlier
    set in ``out`` is removed first (:func:`remove_previous_set`). Returns the manifest."""
    out = Path(out)
    remove_previous_set(out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "labels").mkdir(exist_ok=True)
    positives = [s for s in samples if not s.is_negative]
    canvases = mined_negatives(positives)
    if not canvases:
        raise ValueError("no polyp-free crop could be mined from these frames to make canvases")
    rng = np.random.default_rng(seed)
    manifest = {"seed": seed, "scale_range": list(scale_range), **(source or {}), "images": {}}
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
