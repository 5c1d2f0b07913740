"""Multi-scale training: each batch resized to a random input size (YOLOv3/v5's ``--multi-scale``).

A detector trained at one input size sees each polyp at one range of pixel sizes; run on a
high-resolution frame letterboxed to that size, a small polyp lands below anything it was
taught. Resizing whole batches to sizes between ``(1 - spread)`` and ``(1 + spread)`` of
the training size (multiples of the network's largest stride, 32) shows it every object at
more scales at no cost to the data pipeline: the loader keeps one size, the batch is
interpolated on the training device, and the boxes (input pixels) scale with it. The
anchors stay in pixels, so a shrunken polyp is matched to the anchors its new size is
within 4x of, as it would be at run time; one shrunk below a quarter of the smallest anchor
(about 7 px here) has none and is learnt as background, as in YOLOv5, and one under
``MIN_BOX_SIDE`` is dropped, as the augmentation drops such slivers.

The size of step ``s`` depends only on ``(seed, s)``: a resumed run and every rank of a
distributed run draw the same sizes.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from models.config import MAX_STRIDE, MIN_INPUT_SIZE
from training.data.augment.pipeline import MIN_BOX_SIDE


def size_choices(img: int, spread: float) -> list[int]:
    """The input sizes a batch may take: multiples of the largest stride from ``img * (1 -
    spread)`` to ``img * (1 + spread)`` (YOLOv5: 0.5x-1.5x, rounded down to the stride),
    never below the smallest input the network accepts (two strides)."""
    if not 0.0 <= spread < 1.0:
        raise ValueError(f"multi-scale spread must be in [0, 1), got {spread}")
    if spread == 0.0:
        return [img]
    low = max(MIN_INPUT_SIZE, int(img * (1 - spread)) // MAX_STRIDE * MAX_STRIDE)
    high = max(low, int(img * (1 + spread)) // MAX_STRIDE * MAX_STRIDE)
    return list(range(low, high + 1, MAX_STRIDE))


def size_for_step(step: int, seed: int, img: int, spread: float) -> int:
    """The input size of optimiser step ``step``: uniform over :func:`size_choices`."""
    choices = size_choices(img, spread)
    if len(choices) == 1:
        return choices[0]
    return choices[int(np.random.default_rng([seed, step]).integers(len(choices)))]


def rescale_batch(images: torch.Tensor, targets: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``images`` [B, 3, S, S] resized to ``size`` x ``size`` and ``targets`` [M, 6] (image,
    class, x1, y1, x2, y2 in input pixels) scaled with them, less any box shrunk under
    ``MIN_BOX_SIDE``. Shrinking is anti-aliased, as the runtime's ``INTER_AREA`` letterbox
    is: the network must not learn aliasing it never sees."""
    current = images.shape[-1]
    if size == current:
        return images, targets
    scale = size / current
    images = F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False,
                           antialias=scale < 1)
    targets = targets.clone()
    targets[:, 2:6] *= scale
    sides = targets[:, 4:6] - targets[:, 2:4]
    return images, targets[(sides >= MIN_BOX_SIDE).all(dim=1)]
