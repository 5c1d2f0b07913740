"""``python -m training.compare_runs``: two recipes, run in pairs, side by side.

An ablation here is a pair of training runs that differ in one setting and share the rest,
seed included. This reads each run folder's ``results.csv`` and reports, per pair: the final
epoch's val AP50 and AP50-95 (the run's end, not its best epoch, which would be picked on
the same val images), the noise of the curve (sd of val AP50 over the last epochs) and the
differences B - A; with ``--plot``, both curves of every pair on one figure.

    python -m training.compare_runs --label-a "EMA 0.9999/2000" --label-b "EMA 0.995/124" \\
        --pair runs/study/taylor-uniform-0.5-s0/finetune runs/study-ema/taylor-uniform-0.5-s0/finetune \\
        --pair runs/study/taylor-uniform-0.5-s1/finetune runs/study-ema/taylor-uniform-0.5-s1/finetune \\
        --plot docs/accuracy/ema-experiment.png --json-out docs/accuracy/ema-experiment.json
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

TAIL_EPOCHS = 10


@dataclass(frozen=True)
class RunSummary:
    folder: str
    epochs: int
    final_ap50: float
    final_ap50_95: float
    tail_sd_ap50: float  # sd of val AP50 over the last TAIL_EPOCHS epochs: how noisy the end of the curve is


def read_curve(folder: Path) -> list[dict[str, float]]:
    """Per epoch: epoch, val AP50 and val AP50-95 from the run's ``results.csv``."""
    path = folder / "results.csv"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no results.csv (is {folder} a training run folder?)")
    with path.open() as f:
        rows = [r for r in csv.DictReader(f) if r.get("val_ap50") not in (None, "")]
    if not rows:
        raise ValueError(f"{path}: no epoch with a val AP50 yet")
    try:
        return [{"epoch": int(r["epoch"]), "val_ap50": float(r["val_ap50"]), "val_ap50_95": float(r["val_ap50_95"])}
                for r in rows]
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"{path}: unreadable epoch row ({e})") from None


def summarise(folder: Path, tail: int = TAIL_EPOCHS) -> RunSummary:
    curve = read_curve(folder)
    last = [p["val_ap50"] for p in curve[-tail:]]
    return RunSummary(str(folder), curve[-1]["epoch"], curve[-1]["val_ap50"], curve[-1]["val_ap50_95"],
                      statistics.stdev(last) if len(last) > 1 else 0.0)


def compare(pairs: list[tuple[Path, Path]], tail: int = TAIL_EPOCHS) -> list[dict[str, object]]:
    out = []
    for a, b in pairs:
        sa, sb = summarise(a, tail), summarise(b, tail)
        if sa.epochs != sb.epochs:
            print(f"warning: {a} has {sa.epochs} epochs and {b} {sb.epochs}: the pair is not finished alike",
                  file=sys.stderr)
        out.append({"a": asdict(sa), "b": asdict(sb),
                    "diff_ap50": sb.final_ap50 - sa.final_ap50,
                    "diff_ap50_95": sb.final_ap50_95 - sa.final_ap50_95,
                    "diff_tail_sd_ap50": sb.tail_sd_ap50 - sa.tail_sd_ap50})
    return out


def format_table(rows: list[dict[str, object]], label_a: str, label_b: str) -> str:
    lines = [f"| pair | {label_a}: AP50 / AP50-95 / tail sd | {label_b}: AP50 / AP50-95 / tail sd "
             "| B - A: AP50 / AP50-95 / tail sd |", "|---|---|---|---|"]
    for i, r in enumerate(rows):
        a, b = r["a"], r["b"]
        lines.append(f"| {i} | {a['final_ap50']:.4f} / {a['final_ap50_95']:.4f} / {a['tail_sd_ap50']:.4f} "
                     f"| {b['final_ap50']:.4f} / {b['final_ap50_95']:.4f} / {b['tail_sd_ap50']:.4f} "
                     f"| {r['diff_ap50']:+.4f} / {r['diff_ap50_95']:+.4f} / {r['diff_tail_sd_ap50']:+.4f} |")
    return "\n".join(lines)


def save_plot(pairs: list[tuple[Path, Path]], label_a: str, label_b: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from training.loop.run_log import save_figure

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for i, (a, b) in enumerate(pairs):
        for folder, label, style in ((a, label_a, "-"), (b, label_b, "--")):
            curve = read_curve(folder)
            epochs = [p["epoch"] for p in curve]
            for ax, key in zip(axes, ("val_ap50", "val_ap50_95")):
                ax.plot(epochs, [p[key] for p in curve], style, color=f"C{i}", label=f"pair {i}: {label}")
    for ax, name in zip(axes, ("val AP50", "val AP50-95")):
        ax.set(xlabel="epoch", ylabel=name)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(f"{label_a} (solid) against {label_b} (dashed), one colour per pair")
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.compare_runs", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pair", nargs=2, action="append", required=True, metavar=("RUN_A", "RUN_B"),
                        help="two run folders (each with results.csv) that differ in one setting")
    parser.add_argument("--label-a", default="A", help="what the first run of each pair is")
    parser.add_argument("--label-b", default="B", help="what the second run of each pair is")
    parser.add_argument("--tail", type=int, default=TAIL_EPOCHS,
                        help=f"validated epochs at the end whose spread is the noise (default {TAIL_EPOCHS})")
    parser.add_argument("--plot", type=Path, help="write both curves of every pair here (PNG)")
    parser.add_argument("--json-out", type=Path, help="write the comparison here")
    args = parser.parse_args(argv)
    if args.tail < 2:
        parser.error(f"--tail {args.tail}: the spread needs at least 2 epochs")
    pairs = [(Path(a), Path(b)) for a, b in args.pair]
    try:
        rows = compare(pairs, args.tail)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(format_table(rows, args.label_a, args.label_b))
    if args.plot:
        save_plot(pairs, args.label_a, args.label_b, args.plot)
        print(f"curves: {args.plot}")
    if args.json_out:
        from models.checkpoint import atomic_write_bytes

        atomic_write_bytes(args.json_out, json.dumps({"label_a": args.label_a, "label_b": args.label_b,
                                                      "tail_epochs": args.tail, "pairs": rows}, indent=2).encode())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
