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

from training.data.augment.pipeline import AugmentConfig, Augmenter, Item, letterbox
from training.data.datasets import Sample
from training.data.image_files import read_image
from training.data.sampling import TrainKey


def resize_longest(image: np.ndarray, boxes: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """The image with its longer side ``size``, resized exactly as the runtime resizes a
    frame (``engine.preprocess.Preprocessor``), so that ``val`` scores the very pixels the
    app and ``detect`` feed the network: large frames are first area-averaged by a power of
    two, then resized bilinearly (until session 15 this took one area resize, and ``val``
    and ``detect`` differed by about half a grey level on such frames)."""
    h, w = image.shape[:2]
    scale = size / max(h, w)
    new_w, new_h = max(1, round(w * scale)), max(1, round(h * scale))
    if (new_w, new_h) != (w, h):
        k = power_of_two_prefactor(h, w, new_h, new_w)
        if k > 1:
            image = cv2.resize(image, (w // k, h // k), interpolation=cv2.INTER_AREA)
            image = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
        else:
            image = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    return image, boxes * np.float32(scale)


def power_of_two_prefactor(height: int, width: int, target_height: int, target_width: int) -> int:
    """Largest power of two ``k`` dividing both sides with ``side / k`` still at least the
    target: the runtime's fast integer area step (``engine.preprocess.decimation_factor``,
    which training may not import; a test holds the two equal, pixel for pixel)."""
    k = 1
    while (height % (2 * k) == 0 and width % (2 * k) == 0
           and height // (2 * k) >= target_height and width // (2 * k) >= target_width):
        k *= 2
    return k


class ImageCache:
    """Decoded, resized images of a sample list, filled on first use.

    Give it the samples of ``training.data.data_check.open_checked``, which has already left out
    the files that cannot be decoded; one that fails anyway (changed on disk since) raises
    ``UnreadableImage`` naming the file.
    """

    def __init__(self, samples: list[Sample], size: int) -> None:
        self.samples = samples
        self.size = size
        self._store: dict[int, Item] = {}  # shared with the views of :meth:`view`
        self._offset = 0

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> Item:
        if not 0 <= index < len(self.samples):
            raise IndexError(index)
        key = self._offset + index
        item = self._store.get(key)
        if item is None:
            s = self.samples[index]
            image = read_image(s.image_path)
            if s.crop is not None:  # a mined polyp-free crop: no boxes to move
                x1, y1, x2, y2 = s.crop
                image = np.ascontiguousarray(image[y1:y2, x1:x2])
            image, boxes = resize_longest(image, s.boxes, self.size)
            item = Item(image, boxes.astype(np.float32), s.labels.copy())
            self._store[key] = item
        return item

    def view(self, start: int, stop: int) -> ImageCache:
        """Items ``start:stop`` as a cache of their own that shares the decoded images
        (the trainer scores its polyp-free items for hard-negative mining this way)."""
        out = ImageCache(self.samples[start:stop], self.size)
        out._store, out._offset = self._store, self._offset + start
        return out

    def fill(self) -> None:
        for i in range(len(self)):
            self[i]

    def replace_tail(self, start: int, samples: list[Sample]) -> None:
        """Items ``start:`` become ``samples``, decoded afresh; the ones before keep their
        decoded images (the trainer swaps its pool of hard-negative crops this way). Views
        made before see the old list: make them again."""
        for key in [k for k in self._store if k >= self._offset + start]:
            del self._store[key]
        self.samples = self.samples[:start] + list(samples)


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
    """Augmented training items. The cache holds the ``positives`` first, then the
    polyp-free items; a mosaic's other tiles are polyp-free with probability
    ``negative_share`` (the share of negatives in an epoch), so negatives appear both as
    whole inputs and as background tiles beside polyps.

    With ``cfg.copy_paste``, the polyps of the positives (cut along their masks) are
    pasted into other items: :meth:`fill` makes the cutouts before the loader forks.

    Indexed by :class:`~training.data.sampling.TrainKey`; the generator is seeded by
    (seed, epoch, index) so a run is reproducible whatever the worker count. A plain
    index augments as epoch 0 with mosaic on (tests, previews)."""

    def __init__(self, cache: ImageCache, size: int, cfg: AugmentConfig, seed: int, *,
                 positives: int | None = None, negative_share: float = 0.0,
                 tile_negatives: int | None = None) -> None:
        self.cache = cache
        self.positives = len(cache) if positives is None else positives
        # Mosaic tiles and zoom-out canvases come from the first ``tile_negatives`` polyp-free
        # items (default all): the trainer's hard crops, which follow them, enter whole only.
        negatives = len(cache) - self.positives
        self.tile_negatives = negatives if tile_negatives is None else min(tile_negatives, negatives)
        self.negative_share = negative_share if self.tile_negatives else 0.0
        canvas = self._canvas if self.tile_negatives else None
        self.bank = None
        if cfg.copy_paste > 0:
            from training.data.augment.copy_paste import CutoutBank

            self.bank = CutoutBank(cache.__getitem__, cache.samples[:self.positives])
        self.augment = Augmenter(size, cfg, cache.__getitem__, len(cache), partners=self._partners, canvas=canvas,
                                 cutouts=self.bank.draw if self.bank is not None else None)
        self.seed = seed

    def _canvas(self, rng: np.random.Generator) -> Item:
        return self.cache[self.positives + int(rng.integers(0, self.tile_negatives))]

    def _partners(self, rng: np.random.Generator, n: int) -> list[int]:
        out = []
        for _ in range(n):
            if rng.random() < self.negative_share:
                out.append(self.positives + int(rng.integers(0, self.tile_negatives)))
            else:
                out.append(int(rng.integers(0, self.positives)))
        return out

    def fill(self) -> None:
        """Decode what every epoch will use (the cutouts' masks) once, before workers fork."""
        if self.bank is not None:
            self.bank.fill()

    def __len__(self) -> int:
        return len(self.cache)

    def __getitem__(self, key: TrainKey | int) -> tuple[int, Item]:
        if not isinstance(key, TrainKey):
            key = TrainKey(0, int(key), True)
        rng = np.random.default_rng((self.seed, key.epoch, key.index))
        return key.index, self.augment(key.index, rng, key.mosaic)


class EvalDataset(Dataset):
    """Letterboxed items with boxes in input pixels, plus what is needed to map back."""

    def __init__(self, cache: ImageCache, size: int) -> None:
        self.cache = cache
        self.size = size

    def __len__(self) -> int:
        return len(self.cache)

    def __getitem__(self, index: int) -> tuple[int, Item]:
        return index, letterbox(self.cache[index], self.size)
