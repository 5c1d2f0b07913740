"""A contact sheet of what an augmentation setting makes of real training frames, to look
at before a run is spent on it (``docs/accuracy/*-preview.jpg``).

Top row: polyp-free crops mined from training frames; bottom row: polyp frames; the second
and fourth of each row go through the mosaic (a polyp frame may be zoomed out instead).
Every box is drawn in green.
"""

from __future__ import annotations

import argparse

import cv2
import numpy as np

from training.data.augment.pipeline import AugmentConfig


def save_preview(data: str, out: str, cfg: AugmentConfig, size: int = 320, seed: int = 0) -> None:
    """Write the sheet for ``cfg`` to ``out`` (JPEG), from the first 60 polyp frames of the
    train split and 20 polyp-free crops mined from them."""
    from training.data.datasets import open_dataset
    from training.data.loader import ImageCache, TrainDataset
    from training.data.negatives import polyp_free_frames

    index = open_dataset(data, "train")
    index.samples = [s for s in index.samples if len(s.boxes)][:60]
    negatives = polyp_free_frames(index, None, True, show_progress=False)[0][:20]
    cache = ImageCache(index.samples + negatives, size)
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


def preview_main(what: str, cfg: AugmentConfig, argv: list[str] | None = None,
                 prog: str | None = None) -> int:
    """The command line of a module's preview: ``--data``, ``--out``, ``--seed``."""
    parser = argparse.ArgumentParser(prog=prog, description=f"A contact sheet of {what} on training frames.")
    parser.add_argument("--data", required=True, help="dataset with a train split (Kvasir-SEG)")
    parser.add_argument("--out", required=True, help="the image to write (.jpg)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    save_preview(args.data, args.out, cfg, seed=args.seed)
    print(f"wrote {args.out}")
    return 0

