"""The per-change table: each ablation's final epoch against the recipe's, at equal epochs.

Figures are of each run's LAST epoch (its end of schedule; the best of many noisy epochs on
88 val images is an optimistic pick, more so for noisier runs): val AP50 and AP50-95, the
share of polyp-free val frames with a box at the recall-0.90 threshold (logged each epoch),
and the zoom-out AP50 of the final checkpoint. One seed per run: differences under about 2
points of val AP50 are within what one run moves from epoch to epoch.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from training.ablations.job import DONE_FILE, ZOOM_FILE
from training.ablations.plan import REFERENCE, Run
from training.compare_runs import read_curve
from training.loop.run_log import read_rows, save_figure

KEYS = ("val_ap50", "val_ap50_95", "val_alarm_frames_r90", "zoom_ap50")


def run_figures(folder: Path) -> dict[str, Any] | None:
    """The final epoch's figures of one run folder, or ``None`` before its first epoch."""
    rows = [r for r in read_rows(folder / "train") if r.get("val_ap50") is not None]
    if not rows:
        return None
    last = rows[-1]
    zoom_path = folder / ZOOM_FILE
    zoom = json.loads(zoom_path.read_text()) if zoom_path.is_file() else {}
    return {"epochs_done": int(last["epoch"]), "done": (folder / DONE_FILE).is_file(),
            "val_ap50": last["val_ap50"], "val_ap50_95": last["val_ap50_95"],
            "val_alarm_frames_r90": last.get("val_alarm_frames_r90"), "zoom_ap50": zoom.get("ap50")}


def table(out: Path, runs: list[Run], epochs: int) -> dict[str, Any]:
    rows = {r.name: {"what": r.what, **(run_figures(out / r.name) or {"epochs_done": 0, "done": False})}
            for r in runs}
    ref = rows.get(REFERENCE, {})
    for name, row in rows.items():
        if name != REFERENCE:
            row["minus_reference"] = {k: row[k] - ref[k] for k in KEYS
                                      if row.get(k) is not None and ref.get(k) is not None}
    return {"epochs": epochs, "reference": REFERENCE, "runs": rows}


def _fmt(value: float | None, signed: bool = False, percent: bool = False) -> str:
    if value is None:
        return "–"
    if percent:
        return f"{100 * value:+.1f} pts" if signed else f"{100 * value:.1f}%"
    return f"{value:+.3f}" if signed else f"{value:.3f}"


def format_markdown(result: dict[str, Any]) -> str:
    lines = [f"| run | what it changes | epochs | val AP50 | val AP50-95 | FP@r90 | zoom-out AP50 "
             f"| minus {result['reference']}: AP50 / AP50-95 / FP@r90 / zoom-out |", "|---|---|---|---|---|---|---|---|"]
    for name, r in result["runs"].items():
        d = r.get("minus_reference", {})
        diff = " / ".join([_fmt(d.get("val_ap50"), True), _fmt(d.get("val_ap50_95"), True),
                           _fmt(d.get("val_alarm_frames_r90"), True, True), _fmt(d.get("zoom_ap50"), True)])
        epochs = f"{r['epochs_done']}/{result['epochs']}" + ("" if r["done"] else " (unfinished)")
        lines.append(f"| {name} | {r['what']} | {epochs} | {_fmt(r.get('val_ap50'))} | {_fmt(r.get('val_ap50_95'))} "
                     f"| {_fmt(r.get('val_alarm_frames_r90'), percent=True)} | {_fmt(r.get('zoom_ap50'))} "
                     f"| {diff if name != result['reference'] else 'reference'} |")
    return "\n".join(lines)


def save_curves(out: Path, runs: list[Run], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for i, r in enumerate(runs):
        try:
            curve = read_curve(out / r.name / "train")
        except (FileNotFoundError, ValueError):
            continue
        epochs = [p["epoch"] for p in curve]
        style = "-" if r.name == REFERENCE else "--"
        for ax, key in zip(axes, ("val_ap50", "val_ap50_95")):
            ax.plot(epochs, [p[key] for p in curve], style, color=f"C{i}", label=r.name)
    for ax, name in zip(axes, ("val AP50", "val AP50-95")):
        ax.set(xlabel="epoch", ylabel=name)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle("What each change of the recipe bought: one run per change, the recipe solid")
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)
