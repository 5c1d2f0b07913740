"""Which training items an epoch visits: every polyp image once, plus drawn polyp-free ones.

The training set is laid out as ``[positives..., negatives...]``. Each epoch visits every
positive once and draws ``negative_fraction x positives`` negatives, with replacement
only when there are too few, weighted by how hard each one is (hard-negative mining:
:mod:`training.loop.hard_negatives` raises the weight of background the model fires on).

Every key carries the epoch and whether mosaic is on, so loader workers that persist
across epochs (they hold a copy of the dataset made when they started) still augment as
the epoch asks. The order depends only on (seed, epoch): a resumed run sees the same
batches, whatever the worker count; with several processes each rank takes every
``world``-th key of the same order.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from torch.utils.data import Sampler


@dataclass(frozen=True)
class TrainKey:
    """One training draw: which item, in which epoch, with or without mosaic."""

    epoch: int
    index: int
    mosaic: bool


class EpochPlan(Sampler[TrainKey]):
    """The keys of one epoch: all ``positives`` (indices ``0..positives-1``) once, plus
    ``negative_fraction x positives`` draws among the ``negatives`` that follow them,
    shuffled together; mosaic on for the first ``mosaic_epochs`` epochs (all if None)."""

    def __init__(self, positives: int, negatives: int = 0, *, negative_fraction: float = 0.0, seed: int = 0,
                 mosaic_epochs: int | None = None, rank: int = 0, world: int = 1) -> None:
        if positives < 1:
            raise ValueError("an epoch needs at least one image with a polyp")
        if negative_fraction < 0:
            raise ValueError(f"negative_fraction must be >= 0, not {negative_fraction}")
        self.positives, self.negatives = positives, negatives
        self.negative_fraction = negative_fraction if negatives else 0.0
        self.seed, self.rank, self.world = seed, rank, world
        self.mosaic_epochs = mosaic_epochs
        self.epoch = 0
        self.negative_weights = np.ones(negatives)

    @property
    def negatives_per_epoch(self) -> int:
        return round(self.negative_fraction * self.positives)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def set_negative_weights(self, weights: np.ndarray) -> None:
        """Relative sampling weights of the negatives (hard-negative mining); all > 0."""
        weights = np.asarray(weights, np.float64)
        if weights.shape != (self.negatives,) or not (weights > 0).all():
            raise ValueError(f"need {self.negatives} positive weights, got shape {weights.shape}")
        self.negative_weights = weights

    def epoch_order(self) -> np.ndarray:
        """Item indices of this epoch, for all ranks together."""
        rng = np.random.default_rng((self.seed, self.epoch))
        k = self.negatives_per_epoch
        drawn = np.zeros(0, np.int64)
        if k:
            p = self.negative_weights / self.negative_weights.sum()
            # With replacement: a hard negative may come up several times in one epoch (drawn
            # without, most negatives would be drawn anyway and the weights would flatten).
            drawn = self.positives + rng.choice(self.negatives, size=k, replace=True, p=p)
        return rng.permutation(np.concatenate([np.arange(self.positives), drawn]))

    def __len__(self) -> int:
        return (self.positives + self.negatives_per_epoch) // self.world

    def __iter__(self) -> Iterator[TrainKey]:
        mosaic = self.mosaic_epochs is None or self.epoch < self.mosaic_epochs
        mine = self.epoch_order()[self.rank::self.world][:len(self)]
        return iter([TrainKey(self.epoch, int(i), mosaic) for i in mine])
