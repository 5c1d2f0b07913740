"""A contact sheet of what the model gets wrong at its operating point, to look at rather
than read: the polyp-free frames on which it raises a box (what it takes for a polyp:
folds, bubbles, glare, the scope's edge...) and the polyps it misses.

The operating point is the one ``val`` reports (the strictest threshold at which recall
on the split reaches 0.90): the false alarms there are the ones a clinician would see, and
the misses are the polyps that pull the threshold down. ``polypscope val --review-sheet
PNG`` writes it.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from training.data.datasets import Sample
from training.data.image_files import read_image
from training.evaluation.evaluate import ImageDetections
from training.evaluation.metrics import ImageResult, found_ground_truth, iou_matrix

MAX_ALARMS = 24
MAX_MISSES = 12
THUMB = 200  # pixels, the longer side of a tile


def false_alarm_frames(detections: list[ImageDetections], threshold: float) -> list[tuple[int, float]]:
    """(frame index, its best score) of every polyp-free frame with a box scoring ``>
    threshold``, the most confident first."""
    t = np.float32(threshold)
    hits = [(i, float(np.max(d.scores))) for i, d in enumerate(detections)
            if len(d.scores) and (np.asarray(d.scores, np.float32) > t).any()]
    return sorted(hits, key=lambda h: -h[1])


def missed_polyps(results: list[ImageResult], threshold: float) -> list[tuple[int, int, int | None, float]]:
    """(image index, polyp index, the best-scoring box overlapping it or None, its score)
    of every polyp that no box scoring ``> threshold`` finds, those with the least evidence
    first."""
    missed = []
    for i, r in enumerate(results):
        found = found_ground_truth(r, threshold)
        for g in np.flatnonzero(~found):
            near = _best_overlapping_box(r, int(g))
            missed.append((i, int(g), near, float(r.scores[near]) if near is not None else 0.0))
    return sorted(missed, key=lambda m: m[3])


def _best_overlapping_box(result: ImageResult, g: int) -> int | None:
    """The highest-scoring detection that overlaps polyp ``g`` at all (IoU >= 0.1)."""
    if not len(result.scores):
        return None
    touching = np.flatnonzero(iou_matrix(result.pred_boxes, result.gt_boxes[g:g + 1])[:, 0] >= 0.1)
    return int(touching[np.argmax(result.scores[touching])]) if len(touching) else None


def draw_tile(image: np.ndarray, boxes: list[tuple[np.ndarray, tuple[int, int, int], str]]) -> np.ndarray:
    """``image`` scaled to the tile size with ``boxes`` (xyxy in its pixels, BGR colour, label) drawn."""
    h, w = image.shape[:2]
    scale = THUMB / max(h, w)
    tile = cv2.resize(image, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
    for box, colour, label in boxes:
        x1, y1, x2, y2 = (int(round(v * scale)) for v in box)
        cv2.rectangle(tile, (x1, y1), (x2, y2), colour, 2)
        if label:
            cv2.putText(tile, label, (x1 + 2, max(12, y1 - 3)), cv2.FONT_HERSHEY_SIMPLEX, 0.45, colour, 1, cv2.LINE_AA)
    canvas = np.zeros((THUMB, THUMB, 3), np.uint8)
    canvas[:tile.shape[0], :tile.shape[1]] = tile
    return canvas


def frame_pixels(sample: Sample) -> np.ndarray:
    """What ``sample`` shows: its image, cut to its crop where it has one."""
    image = read_image(sample.image_path)
    if sample.crop is not None:
        x1, y1, x2, y2 = sample.crop
        image = image[y1:y2, x1:x2]
    return image


def save_tile_grid(path: str | Path, tiles: list[np.ndarray], captions: list[str], title: str,
                   columns: int = 6) -> None:
    """Tiles from :func:`draw_tile` in a grid with a caption each, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = max(1, -(-len(tiles) // columns))
    fig, axes = plt.subplots(rows, columns, figsize=(columns * 2.2, rows * 2.5 + 0.6), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, tile, caption in zip(axes.ravel(), tiles, captions):
        ax.imshow(cv2.cvtColor(tile, cv2.COLOR_BGR2RGB))
        ax.set_title(caption, fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def save_review_sheet(path: str | Path, threshold: float, negatives: list[Sample],
                      negative_detections: list[ImageDetections], samples: list[Sample],
                      results: list[ImageResult], title: str) -> dict[str, int]:
    """Write the sheet (PNG): false alarms on polyp-free frames (red, with scores) and
    missed polyps (green: the polyp; yellow: the best box near it, below the threshold).
    Returns how many of each there were (the sheet shows at most 24 and 12)."""
    t = np.float32(threshold)
    alarms = false_alarm_frames(negative_detections, threshold)
    misses = missed_polyps(results, threshold)
    tiles, captions = [], []
    for i, best in alarms[:MAX_ALARMS]:
        det = negative_detections[i]
        keep = np.asarray(det.scores, np.float32) > t
        tiles.append(draw_tile(frame_pixels(negatives[i]),
                               [(b, (0, 0, 255), f"{s:.2f}") for b, s in zip(det.boxes[keep], det.scores[keep])]))
        captions.append(f"false alarm {best:.2f}\n{negatives[i].id[:22]}")
    for i, g, near, near_score in misses[:MAX_MISSES]:
        r = results[i]
        boxes = [(r.gt_boxes[g], (0, 200, 0), "polyp")]
        if near is not None:
            boxes.append((r.pred_boxes[near], (0, 220, 255), f"{near_score:.2f}"))
        tiles.append(draw_tile(frame_pixels(samples[i]), boxes))
        captions.append(f"missed (best near {near_score:.2f})\n{samples[i].id[:22]}")
    save_tile_grid(path, tiles, captions,
                   f"{title}\nthreshold {threshold:.3f}: {len(alarms)} of {len(negatives)} polyp-free frames with a box "
                   f"(red), {len(misses)} polyps missed (green; yellow: the best box near it)")
    return {"false_alarm_frames": len(alarms), "missed_polyps": len(misses)}
