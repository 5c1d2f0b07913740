"""The study's answer: cells as mean ± sd over seeds, paired comparisons with intervals, the
fine-tuning curves and the trade-off plot, and the default chosen by the rule below.

The rule, fixed before any run: among the PRUNED cells (not the from-scratch control) whose
every seed has finished, with at least :data:`MIN_FLOPS_CUT` fewer FLOPs than the baseline,
the one with the highest mean val AP50 over its seeds. Test never takes part: it is scored only with ``--score-test``, once,
for the final table.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from training.prune_study.statistics import mean_sd, paired_difference, unpaired_difference, verdict
from training.prune_study.variants import SCRATCH

MIN_FLOPS_CUT = 0.5
COMPARISONS = (("taylor", "random"), ("taylor-gate", "random"), ("taylor-gate", "taylor"),
               ("taylor", SCRATCH), ("taylor-gate", SCRATCH), ("random", SCRATCH))


def _figure(result: dict[str, Any], split: str, key: str) -> float | None:
    return result["after_training"].get(split, {}).get(key)


def summarise_cells(results: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per cell: method, ratio, FLOPs, seeds, and mean/sd of every figure scored."""
    by_cell: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in results:
        by_cell[r["cell"]].append(r)
    cells = {}
    for name, runs in by_cell.items():
        first = runs[0]
        cell = {"cell": name, "method": first["method"], "ratio": first["ratio"], "scope": first["scope"],
                "gflops": first["gflops"], "params": first["params"], "seeds": sorted(r["seed"] for r in runs),
                "epochs_done": sorted({r["epochs_done"] for r in runs}), "all_finished": all(r["finished"] for r in runs),
                "all_flattened": all(r["flattened"] for r in runs)}
        for split in ("val", "test"):
            for key in ("ap50", "ap50_95"):
                values = [v for v in (_figure(r, split, key) for r in runs) if v is not None]
                if values:
                    cell[f"{split}_{key}"] = mean_sd(values)
        cells[name] = cell
    return cells


def compare(results: list[dict[str, Any]], split: str = "val", key: str = "ap50") -> list[dict[str, Any]]:
    """Differences ``a - b`` per ratio for each pair of :data:`COMPARISONS` present: paired
    by seed where the cells share two or more seeds, else unpaired (pooled interval)."""
    table: dict[tuple[str, float], dict[int, float]] = defaultdict(dict)
    for r in results:
        if r["scope"] == "uniform" and (value := _figure(r, split, key)) is not None:
            table[(r["method"], r["ratio"])][r["seed"]] = value
    out = []
    for ratio in sorted({ratio for _, ratio in table}):
        for a, b in COMPARISONS:
            if (a, ratio) in table and (b, ratio) in table:
                diff = paired_difference(table[(a, ratio)], table[(b, ratio)])
                if diff is None:  # a one-seed control: against the other cell's spread
                    diff = unpaired_difference(list(table[(a, ratio)].values()), list(table[(b, ratio)].values()))
                out.append({"ratio": ratio, "a": a, "b": b, "split": split, "metric": key, "difference": diff,
                            "verdict": verdict(diff, a, b)})
    return out


def pruned_among(run_names: Iterable[str]) -> list[str]:
    """The pruned runs among ``run_names`` (the from-scratch control takes no part in the rule)."""
    return [name for name in run_names if not name.startswith(SCRATCH)]


def choose_default(baseline_gflops: float, cells: dict[str, dict[str, Any]],
                   unfinished: Iterable[str] = ()) -> dict[str, Any] | None:
    """The rule (module docstring). ``None`` while any pruned run of the study is
    ``unfinished``: a cell with a seed still training is not "left out" of the choice, the
    choice waits for it (an early report would otherwise pick among whichever cells were
    done)."""
    if pruned_among(unfinished):
        return None
    eligible = [c for c in cells.values() if c["method"] != SCRATCH and "val_ap50" in c and c["all_finished"]
                and c["gflops"] <= (1 - MIN_FLOPS_CUT) * baseline_gflops]
    return max(eligible, key=lambda c: c["val_ap50"]["mean"], default=None)


def progress_note(total: int, waiting: list[dict[str, Any]], not_started: list[str]) -> str:
    """Markdown that says, above an interim table, which runs it leaves out and why."""
    if not waiting and not not_started:
        return ""
    done = total - len(waiting) - len(not_started)
    pruned_waiting = pruned_among([w["name"] for w in waiting] + not_started)
    default = ("no default is chosen until every pruned run has finished" if pruned_waiting else
               "every pruned run has finished, so the rule's default stands (the control does not take part in it)")
    lines = [f"**Interim: {done} of {total} runs finished.** Only finished runs are scored below; {default}; "
             "test cannot be scored until every run has finished.", ""]
    lines += [f"- {w['name']}: training, {w['epochs_done']} epochs so far (val AP50 at its last epoch "
              f"{w['val_ap50_last_epoch']:.3f}, EMA weights, not used)" for w in waiting]
    lines += [f"- {name}: not started" for name in not_started]
    return "\n".join(lines) + "\n\n"


def _ms(stats: dict[str, float] | None) -> str:
    if stats is None:
        return "–"
    return f"{stats['mean']:.3f} ± {stats['sd']:.3f}" if stats["n"] > 1 else f"{stats['mean']:.3f}"


def cells_table(baseline: dict[str, Any], cells: dict[str, dict[str, Any]], latency: dict[str, Any] | None) -> str:
    """Markdown: one row per cell, mean ± sd over its seeds."""
    has_test = any("test_ap50" in c for c in cells.values())
    head = ["cell", "seeds", "GFLOPs (cut)", "epochs", "flattened", "val AP50", "val AP50-95"]
    head += ["test AP50", "test AP50-95"] if has_test else []
    head += ["inference p50 ms"] if latency else []
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    base_flops = baseline["gflops"]
    rows = [("baseline (unpruned)", baseline, None)] + [(c["cell"], c, c) for c in
                                                         sorted(cells.values(), key=lambda c: (c["ratio"], c["method"]))]
    for label, c, cell in rows:
        cut = f"{c['gflops']:.3f} ({100 * (1 - c['gflops'] / base_flops):.0f}%)"
        if cell is None:
            vals = [label, "–", cut, "–", "–", f"{baseline['val']['ap50']:.3f}", f"{baseline['val']['ap50_95']:.3f}"]
            vals += [f"{baseline['test']['ap50']:.3f}", f"{baseline['test']['ap50_95']:.3f}"] if has_test else []
        else:
            vals = [label, ",".join(map(str, c["seeds"])), cut, "/".join(map(str, c["epochs_done"])),
                    "yes" if c["all_flattened"] else "no", _ms(c.get("val_ap50")), _ms(c.get("val_ap50_95"))]
            vals += [_ms(c.get("test_ap50")), _ms(c.get("test_ap50_95"))] if has_test else []
        if latency:
            key = "baseline" if cell is None else f"ratio-{c['ratio']:.1f}" if c["scope"] == "uniform" else c["cell"]
            vals.append(f"{latency[key]['p50']:.2f}" if key in latency else "–")
        lines.append("| " + " | ".join(vals) + " |")
    return "\n".join(lines) + "\n"


def comparisons_table(comparisons: list[dict[str, Any]]) -> str:
    lines = ["| ratio | comparison | split, metric | seeds | mean difference | 95% interval | verdict |",
             "|---|---|---|---|---|---|---|"]
    for c in comparisons:
        d = c["difference"]
        diff = "–" if d is None else f"{d['mean']:+.4f}"
        ci = "–" if d is None else f"[{d['ci95'][0]:+.4f}, {d['ci95'][1]:+.4f}]"
        if d is None:
            seeds = "–"
        elif d.get("kind") == "unpaired":
            seeds = f"{d['n_a']} vs {d['n_b']} (unpaired)"
        else:
            seeds = str(d["n"])
        lines.append(f"| {c['ratio']:.1f} | {c['a']} − {c['b']} | {c['split']} {c['metric']} | {seeds} | {diff} | {ci} "
                     f"| {c['verdict']} |")
    return "\n".join(lines) + "\n"


def plot_curves(path: Path, results: list[dict[str, Any]]) -> None:
    """Val AP50 per epoch of every run, one colour per cell: has each run flattened?"""
    fig, ax = _axes((8, 4.8))
    colours: dict[str, Any] = {}
    for r in sorted(results, key=lambda r: r["name"]):
        if not r["curve"]:
            continue
        first = r["cell"] not in colours
        line, = ax.plot([p["epoch"] for p in r["curve"]], [p["val_ap50"] for p in r["curve"]], lw=1.2,
                        color=colours.get(r["cell"]), alpha=0.85, label=r["cell"] if first else None)
        colours.setdefault(r["cell"], line.get_color())
    ax.set(xlabel="epoch of fine-tuning (from-scratch control: of training)", ylabel="val AP50 (EMA weights)",
           title="Pruning study: every run's validation curve (one line per seed)")
    _save(fig, ax, path)


def plot_tradeoff(path: Path, baseline: dict[str, Any], cells: dict[str, dict[str, Any]]) -> None:
    """Mean val AP50 ± sd against GFLOPs per cell; the control drawn apart."""
    fig, ax = _axes((7.5, 4.8))
    methods = sorted({c["method"] for c in cells.values()})
    for i, method in enumerate(methods):
        pts = sorted((c["gflops"], c["val_ap50"]["mean"], c["val_ap50"]["sd"]) for c in cells.values()
                     if c["method"] == method and "val_ap50" in c)
        if not pts:
            continue
        x, y, e = zip(*pts, strict=True)
        offset = 1 + 0.01 * (i - len(methods) / 2)  # keep error bars of one ratio apart
        seeds = sorted({len(c["seeds"]) for c in cells.values() if c["method"] == method and "val_ap50" in c})
        n = "/".join(map(str, seeds))
        label = f"{method} (one run)" if seeds == [1] else f"{method} (mean ± sd over {n} seeds)"
        ax.errorbar([v * offset for v in x], y, yerr=e, marker="s" if method == SCRATCH else "o", capsize=3,
                    linestyle=":" if method == SCRATCH else "-", label=label)
    ax.scatter([baseline["gflops"]], [baseline["val"]["ap50"]], c="k", marker="*", s=140, label="baseline", zorder=5)
    ax.set(xlabel="GFLOPs per frame", ylabel="val AP50 after training",
           title="Pruning trade-off (val; test is not used to choose)")
    _save(fig, ax, path)


def _axes(size: tuple[float, float]) -> tuple[Any, Any]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=size)


def _save(fig: Any, ax: Any, path: Path) -> None:
    import matplotlib.pyplot as plt

    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
