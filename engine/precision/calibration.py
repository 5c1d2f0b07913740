"""INT8 calibration data: letterboxed frames in batches, exactly as inference sees them.

Used by the Q/DQ quantizer (:mod:`engine.precision.int8`) and, on TensorRT 10 only, by the
implicit entropy calibrator of :mod:`engine.trt_engine.build`. Calibrate on TRAINING frames:
validation picks the model and the threshold, test is scored once.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np

from engine.preprocess import DEFAULT_LETTERBOX_COLOUR, Preprocessor

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")


class CalibrationError(ValueError):
    """No usable calibration images; names the folder."""


def images_digest(files: list[Path]) -> str:
    """A short checksum of which frames calibrate (names and sizes): part of a cache's key."""
    import hashlib

    h = hashlib.sha256()
    for f in files:
        h.update(f"{f.name}:{f.stat().st_size};".encode())
    return h.hexdigest()[:12]


def calibration_images(folder: str | Path, limit: int | None = None, split_file: str | Path | None = None) -> list[Path]:
    """Image files of ``folder`` (sorted), or of its ``images/`` subfolder, optionally only
    the ids listed in ``split_file``. A dataset folder with ``splits/train.txt`` gives its
    training frames unless another list is named; the test list is refused."""
    root = Path(folder)
    if split_file is None and (root / "splits" / "train.txt").is_file():
        split_file = root / "splits" / "train.txt"  # a dataset folder: its training frames, never val or test
    if split_file is not None and Path(split_file).stem == "test":
        raise CalibrationError(f"{split_file}: calibration on the test split would tune the model on what scores it; "
                               "use splits/train.txt")
    if (root / "images").is_dir():
        root = root / "images"
    if not root.is_dir():
        raise CalibrationError(f"{folder}: no such calibration folder")
    files = sorted(p for p in root.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if split_file is not None:
        wanted = set(Path(split_file).read_text().split())
        files = [p for p in files if p.stem in wanted]
    if limit:
        files = files[:limit]
    if not files:
        raise CalibrationError(f"{folder}: no images to calibrate with")
    return files


class CalibrationBatches:
    """Iterates ``[batch, 3, S, S]`` float32 arrays; unreadable images are skipped and
    counted in ``skipped`` (by file name) rather than failing the build."""

    def __init__(self, files: list[Path], input_size: int, batch_size: int = 8,
                 colour: tuple[int, int, int] = DEFAULT_LETTERBOX_COLOUR) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        self.files = list(files)
        self.input_size = input_size
        self.batch_size = batch_size
        self.preprocess = Preprocessor(input_size, colour)
        self.skipped: list[str] = []

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return (self.batch_size, 3, self.input_size, self.input_size)

    def __len__(self) -> int:
        return len(self.files) // self.batch_size

    def __iter__(self) -> Iterator[np.ndarray]:
        batch = np.empty(self.shape, np.float32)
        filled = 0
        for path in self.files:
            image = cv2.imread(str(path), cv2.IMREAD_COLOR)
            if image is None:
                self.skipped.append(path.name)
                continue
            tensor, _ = self.preprocess(image)
            batch[filled] = tensor[0]
            filled += 1
            if filled == self.batch_size:
                yield batch.copy()
                filled = 0
        # A partial last batch is dropped: TensorRT calibrates with a fixed batch size.
