"""Small-sample statistics for the study: seeds are few (3 to 5), so intervals use Student's t.

A paired comparison pairs two cells by seed: the same seed means the same fine-tuning data
order (and, for Taylor, the same scoring batches), so the difference within a pair removes
what the seed does to both and is tested against zero. Cells that share fewer than two seeds
(a one-run control) are compared unpaired, with a pooled two-sample interval.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

# Two-sided 95% quantiles of Student's t by degrees of freedom (scipy.stats.t.ppf(0.975, df)).
_T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228,
        12: 2.179, 15: 2.131, 20: 2.086, 30: 2.042, 40: 2.021, 60: 2.000, 120: 1.980}


def t95(df: int) -> float:
    """The 95% two-sided t quantile; between tabulated values the next smaller df (wider)."""
    if df < 1:
        raise ValueError("a t interval needs at least two values")
    if df > 120:
        return 1.96
    return _T95[max(k for k in _T95 if k <= df)]


def mean_sd(values: Sequence[float]) -> dict[str, float]:
    """Mean, sample standard deviation (0 for one value) and count."""
    n = len(values)
    if n == 0:
        raise ValueError("no values")
    mean = sum(values) / n
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
    return {"mean": mean, "sd": sd, "n": n}


def paired_difference(a: Mapping[int, float], b: Mapping[int, float]) -> dict[str, Any] | None:
    """``a - b`` over the seeds both have: mean, sd, 95% t interval. ``None`` with fewer
    than two common seeds (no interval can be given)."""
    seeds = sorted(set(a) & set(b))
    if len(seeds) < 2:
        return None
    diffs = [a[s] - b[s] for s in seeds]
    stats = mean_sd(diffs)
    half = t95(len(diffs) - 1) * stats["sd"] / math.sqrt(len(diffs))
    return {**stats, "ci95": [stats["mean"] - half, stats["mean"] + half], "seeds": seeds, "kind": "paired"}


def unpaired_difference(a: Sequence[float], b: Sequence[float]) -> dict[str, Any] | None:
    """``mean(a) - mean(b)`` with a pooled two-sample 95% t interval, for cells that share
    fewer than two seeds (the CPU's from-scratch control has one). The pooled variance takes
    run-to-run spread as the same in both cells, so a single run is compared against the
    other cell's spread. ``None`` when no spread can be estimated (both cells one run)."""
    na, nb = len(a), len(b)
    if na == 0 or nb == 0 or na + nb < 3:
        return None
    ma, mb = sum(a) / na, sum(b) / nb
    pooled = (sum((v - ma) ** 2 for v in a) + sum((v - mb) ** 2 for v in b)) / (na + nb - 2)
    half = t95(na + nb - 2) * math.sqrt(pooled * (1 / na + 1 / nb))
    mean = ma - mb
    return {"mean": mean, "sd": math.sqrt(pooled), "n": na + nb, "n_a": na, "n_b": nb,
            "ci95": [mean - half, mean + half], "kind": "unpaired"}


def verdict(diff: dict[str, Any] | None, better: str, worse: str) -> str:
    """Plain words for a difference: which is better, or that the data cannot say. An
    unpaired one says what it assumed: a single from-scratch run probably varies more from
    seed to seed than fine-tunes of one parent do, so its interval may be too narrow."""
    if diff is None:
        return "not enough seeds to say"
    lo, hi = diff["ci95"]
    if lo > 0:
        words = f"{better} is better (the 95% interval excludes 0)"
    elif hi < 0:
        words = f"{worse} is better (the 95% interval excludes 0)"
    else:
        words = "no difference shown (the 95% interval contains 0)"
    if diff.get("kind") == "unpaired":
        words += "; unpaired, assuming both vary alike from seed to seed"
    return words
