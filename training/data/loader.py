"""Batches for training and evaluation, with images decoded once and kept in memory.

JPEG decoding of full-size Kvasir frames costs more than a training step of a small
YOLOv3 on two cores, so every image is decoded once, shrunk so its longer side equals
the input size, and cached as uint8 (792 images at 256 px take about 150 MB).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from training.data.augment import AugmentConfig, Augmenter, Item, letterbox
from training.data.datasets import Sample
from training.data.image_files import read_image


def resize_longest(image: np.ndarray, boxes: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    h, w = image.shape[:2]
    scale = size / max(h, w)
    if scale != 1:
        interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
        image = cv2.resize(image, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=interp)
    return image, boxes * np.float32(scale)


class ImageCache:
    """Decoded, resized images of a sample list, filled on first use.

    Give it the samples of ``training.data.data_check.open_checked``, which has already left out
    the files that cannot be decoded; one that fails anyway (changed on disk since) raises
    ``UnreadableImage`` naming the file.
    """

    def __init__(self, samples: list[Sample], size: int) -> None:
        self.samples = samples
        self.size = size
        self._items: list[Item | None] = [None] * len(samples)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> Item:
        item = self._items[index]
        if item is None:
            s = self.samples[index]
            image, boxes = resize_longest(read_image(s.image_path), s.boxes, self.size)
            item = Item(image, boxes.astype(np.float32), s.labels.copy())
            self._items[index] = item
        return item

    def fill(self) -> None:
        for i in range(len(self)):
            self[i]


@dataclass
class Batch:
    """``images`` [B, 3, S, S] float in [0, 1] RGB; ``targets`` [M, 6] rows of
    (image index in batch, class, x1, y1, x2, y2) in input pixels."""

    images: torch.Tensor
    targets: torch.Tensor
    indices: list[int]


def to_tensor(image_bgr: np.ndarray) -> torch.Tensor:
    """HxWx3 BGR uint8 -> 3xHxW RGB float in [0, 1] (the model's input convention)."""
    rgb = np.ascontiguousarray(image_bgr[:, :, ::-1].transpose(2, 0, 1))
    return torch.from_numpy(rgb).float().div_(255.0)


def collate(items: list[tuple[int, Item]]) -> Batch:
    images = torch.stack([to_tensor(it.image) for _, it in items])
    rows = []
    for b, (_, it) in enumerate(items):
        if len(it.boxes):
            n = len(it.boxes)
            rows.append(np.concatenate([np.full((n, 1), b), it.labels.reshape(-1, 1), it.boxes], axis=1))
    targets = torch.from_numpy(np.concatenate(rows).astype(np.float32)) if rows else torch.zeros(0, 6)
    return Batch(images, targets, [i for i, _ in items])


class TrainDataset(Dataset):
    """Augmented training items; the generator is seeded by (seed, epoch, index) so a
    run is reproducible whatever the worker count."""

    def __init__(self, cache: ImageCache, size: int, cfg: AugmentConfig, seed: int) -> None:
        self.cache = cache
        self.augment = Augmenter(size, cfg, cache.__getitem__, len(cache))
        self.seed = seed
        self.epoch = 0
        self.use_mosaic = True

    def __len__(self) -> int:
        return len(self.cache)

    def __getitem__(self, index: int) -> tuple[int, Item]:
        rng = np.random.default_rng((self.seed, self.epoch, index))
        return index, self.augment(index, rng, self.use_mosaic)


class EvalDataset(Dataset):
    """Letterboxed items with boxes in input pixels, plus what is needed to map back."""

    def __init__(self, cache: ImageCache, size: int) -> None:
        self.cache = cache
        self.size = size

    def __len__(self) -> int:
        return len(self.cache)

    def __getitem__(self, index: int) -> tuple[int, Item]:
        return index, letterbox(self.cache[index], self.size)
