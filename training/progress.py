"""Progress bars for long work (training, evaluation, pruning), on stderr."""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import TypeVar

from tqdm import tqdm

T = TypeVar("T")


def progress(items: Iterable[T], *, desc: str, enabled: bool = True, total: int | None = None,
             leave: bool = True) -> Iterable[T]:
    """``items`` wrapped in a tqdm bar when ``enabled`` (plain iteration otherwise)."""
    if not enabled:
        return items
    return tqdm(items, desc=desc, total=total, leave=leave, file=sys.stderr, dynamic_ncols=True,
                mininterval=1.0)
