"""What the study runs: one cell is a criterion at a ratio, repeated over seeds.

A seed changes everything random in a cell: the channels the random control removes, the
order of the batches Taylor scores are accumulated over, and the fine-tuning data order.
The ``scratch`` method is the control of Liu et al. 2019 ("Rethinking the value of network
pruning"): the architecture a uniform prune at that ratio leaves (every criterion leaves the
same widths under ``uniform``), initialised at random and trained from scratch.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from training.pruning.importance import CRITERIA

RATIOS = (0.3, 0.5, 0.7)
SEEDS = (0, 1, 2)
SCRATCH = "scratch"
METHODS = (*CRITERIA, SCRATCH)
GRIDS = {
    # The full study: every criterion at every ratio, and the control at each.
    "full": [(m, r) for m in CRITERIA for r in RATIOS] + [(SCRATCH, r) for r in RATIOS],
    # What a 2-core CPU can run in a few sittings: the two Taylor forms and the random
    # control at the default's ratio, and the from-scratch control of that architecture.
    "reduced": [("taylor", 0.5), ("taylor-gate", 0.5), ("random", 0.5), (SCRATCH, 0.5)],
}


@dataclass(frozen=True)
class Variant:
    """One run: ``method`` at ``ratio`` (``scope`` uniform or global) with ``seed``."""

    method: str
    ratio: float
    scope: str = "uniform"
    seed: int = 0

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"unknown method {self.method!r}; choose one of {', '.join(METHODS)}")
        if not 0 < self.ratio < 1:
            raise ValueError(f"ratio {self.ratio} must lie between 0 and 1")
        if self.method == SCRATCH and self.scope != "uniform":
            raise ValueError("the from-scratch control takes the uniform architecture")

    @classmethod
    def parse(cls, text: str, seed: int = 0) -> Variant:
        parts = text.split(":")
        if len(parts) not in (2, 3):
            raise argparse.ArgumentTypeError(f"variant {text!r}: expected method:ratio[:scope], e.g. taylor:0.5:global")
        try:
            return cls(parts[0], float(parts[1]), parts[2] if len(parts) == 3 else "uniform", seed)
        except ValueError as err:
            raise argparse.ArgumentTypeError(f"variant {text!r}: {err}") from err

    @property
    def cell(self) -> str:
        """The name shared by every seed of this variant."""
        return f"{self.method}-{self.scope}-{self.ratio:.1f}"

    @property
    def name(self) -> str:
        return f"{self.cell}-s{self.seed}"

    def __str__(self) -> str:
        return f"{self.method}:{self.ratio}:{self.scope}"


def expand(cells: list[tuple[str, float]] | list[Variant], seeds: list[int] | tuple[int, ...]) -> list[Variant]:
    """Every cell at every seed, seed-major, so that an interrupted study has whole seeds."""
    base = [c if isinstance(c, Variant) else Variant(c[0], c[1]) for c in cells]
    return [Variant(v.method, v.ratio, v.scope, s) for s in seeds for v in base]
