"""Per-epoch logs of a training run (CSV and JSON lines) and their plots."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

from models.checkpoint import atomic_write_bytes
from training.evaluation.metrics import ImageResult, pr_curve


def read_rows(out: Path) -> list[dict[str, Any]]:
    """The per-epoch rows of the run in ``out`` (``results.jsonl``), none before its first
    epoch. Readable while the run writes: a line not yet whole is skipped."""
    path = out / "results.jsonl"
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except ValueError:
            pass
    return rows


class RunLog:
    """Appends one row per epoch; rewrites ``results.csv`` whole so columns stay aligned."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self.rows = read_rows(out)

    def append(self, row: dict[str, Any]) -> None:
        # Drop rows a crashed earlier attempt wrote for this epoch or later.
        self.rows = [r for r in self.rows if r["epoch"] < row["epoch"]] + [row]
        atomic_write_bytes(self.out / "results.jsonl",
                           "".join(json.dumps(r) + "\n" for r in self.rows).encode())
        columns = list(dict.fromkeys(k for r in self.rows for k in r))
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=columns)
        writer.writeheader()
        writer.writerows(self.rows)
        atomic_write_bytes(self.out / "results.csv", buf.getvalue().encode())

    def plot(self) -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        epochs = [r["epoch"] for r in self.rows]
        fig, axes = plt.subplots(1, 2, figsize=(11, 4))
        losses = {key: [r.get(key) for r in self.rows] for key in ("loss_total", "loss_box", "loss_obj")}
        for key, values in losses.items():
            axes[0].plot(epochs, values, label=key.removeprefix("loss_"))
        positive = all(v is not None and v > 0 for values in losses.values() for v in values)
        # A log axis shows the late, small changes; it cannot show a zero (a run with no boxes drawn).
        axes[0].set(title="training loss", xlabel="epoch", yscale="log" if positive else "linear")
        axes[0].legend()
        for key in ("val_ap50", "val_ap50_95", "val_f1"):
            pts = [(r["epoch"], r[key]) for r in self.rows if key in r]
            if pts:
                axes[1].plot(*zip(*pts), marker=".", label=key.removeprefix("val_"))
        axes[1].set(title="validation", xlabel="epoch", ylim=(0, 1))
        axes[1].legend()
        axes[1].grid(alpha=0.3)
        fig.tight_layout()
        save_figure(fig, self.out / "results.png")
        plt.close(fig)

    def save_pr_curve(self, results: list[ImageResult], title: str) -> None:
        save_pr_plot(results, self.out / "pr_curve.png", title)


def save_pr_plot(results: list[ImageResult], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    recall, precision = pr_curve(results)
    fig, ax = plt.subplots(figsize=(5, 4.5))
    ax.plot(recall, precision)
    ax.set(title=title, xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02))
    ax.grid(alpha=0.3)
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)


def save_figure(fig: Any, path: Path) -> None:
    """Write a matplotlib figure as PNG atomically (a plot half-written by a killed run is never left)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    atomic_write_bytes(path, buf.getvalue())
