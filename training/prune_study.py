"""The pruning study: every criterion at every ratio, before and after fine-tuning, with
accuracy on test and latency measured side by side. Writes ``docs/pruning.md`` and
``docs/pruning_tradeoff.png``; resumable (finished variants are skipped).

    python -m training.prune_study --weights assets/models/baseline.safetensors \\
        --data ../shared/data/kvasir-seg --out runs/study --finetune-epochs 10

Selection of the shipped default uses validation AP50 only; test figures are reported.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from models import load_checkpoint
from training.datasets import open_dataset
from training.evaluate import evaluate_model
from training.loader import ImageCache
from training.pruning.prune import PruneJob, run_prune, summary

METHODS = ("taylor", "random", "l1", "bn")
RATIOS = (0.3, 0.5, 0.7)
KEYS = ("ap50", "ap50_95", "f1")


def evaluate(weights: Path, data: Path, split: str) -> dict[str, float]:
    ckpt = load_checkpoint(weights)
    size = ckpt.config.input_size
    cache = ImageCache(open_dataset(data, split).samples, size)
    metrics, _ = evaluate_model(ckpt.model, cache, size, ckpt.config.class_names, bootstrap_reps=0)
    return {k: round(float(metrics[k]), 4) for k in KEYS}


def run_variant(args: argparse.Namespace, method: str, ratio: float) -> dict[str, Any]:
    folder = Path(args.out) / f"{method}_{ratio:.1f}"
    result_file = folder / "result.json"
    if result_file.is_file():
        return json.loads(result_file.read_text())
    folder.mkdir(parents=True, exist_ok=True)
    started = time.time()
    one_shot = PruneJob(Path(args.weights), method, ratio, folder / "pruned.safetensors", Path(args.data),
                        finetune_epochs=0, seed=args.seed, threads=args.threads, show_progress=not args.quiet)
    meta = run_prune(one_shot)
    result: dict[str, Any] = {"method": method, "ratio": ratio, **meta["after"],
                              "before_finetune": {"test": evaluate(one_shot.out, Path(args.data), "test"),
                                                  "val": evaluate(one_shot.out, Path(args.data), "val")}}
    if args.finetune_epochs:
        tuned = PruneJob(Path(args.weights), method, ratio, folder / "finetuned.safetensors", Path(args.data),
                         finetune_epochs=args.finetune_epochs, seed=args.seed, threads=args.threads,
                         show_progress=not args.quiet)
        run_prune(tuned)
        result["after_finetune"] = {"test": evaluate(tuned.out, Path(args.data), "test"),
                                    "val": evaluate(tuned.out, Path(args.data), "val")}
    result["minutes"] = round((time.time() - started) / 60, 1)
    result_file.write_text(json.dumps(result, indent=2))
    return result


def _final(result: dict[str, Any]) -> dict[str, Any]:
    return result.get("after_finetune") or result["before_finetune"]


def measure_latency(args: argparse.Namespace, baseline: dict[str, Any], results: list[dict[str, Any]]) -> None:
    """Export every variant and time all of them with the baseline, interleaved, in one run."""
    from engine.benchmark import BenchTarget, bench_frame, run_bench
    from engine.export import default_check_images, export_onnx

    paths = [export_onnx(Path(args.weights), Path(args.out) / "baseline.onnx", check_images=None).path]
    for r in results:
        folder = Path(args.out) / f"{r['method']}_{r['ratio']:.1f}"
        weights = folder / ("finetuned.safetensors" if (folder / "finetuned.safetensors").is_file() else "pruned.safetensors")
        paths.append(export_onnx(weights, folder / "model.onnx", check_images=None).path)
    frames = [p for p in default_check_images(1) if p.is_file()]
    report = run_bench([BenchTarget(p, "onnxruntime-cpu") for p in paths], iterations=args.bench_iterations,
                       frame=bench_frame(frames[0]) if frames else None, show_progress=not args.quiet)
    for r, m in zip([baseline, *results], report["models"]):
        r["onnx_bytes"] = m["file_bytes"]
        r["latency_ms"] = {"p50": m["latency_ms"]["inference"]["p50"], "p99": m["latency_ms"]["inference"]["p99"],
                           "total_p50": m["latency_ms"]["total"]["p50"]}


def write_report(args: argparse.Namespace, baseline: dict[str, Any], results: list[dict[str, Any]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    docs = Path(args.docs)
    docs.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for method, marker in zip(METHODS, "osD^"):
        pts = [(r["latency_ms"]["p50"], _final(r)["test"]["ap50"]) for r in results if r["method"] == method]
        if pts:
            ax.plot(*zip(*sorted(pts)), marker=marker, label=method)
    ax.scatter([baseline["latency_ms"]["p50"]], [baseline["after_finetune"]["test"]["ap50"]], c="k", marker="*",
               s=120, label="baseline (unpruned)", zorder=5)
    ax.set(xlabel="onnxruntime CPU inference, median ms (batch 1)", ylabel="AP50 on test",
           title="Pruning trade-off (after fine-tuning)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(docs / "pruning_tradeoff.png", dpi=110)
    plt.close(fig)
    base_lat = baseline["latency_ms"]["p50"]
    lines = ["| method | ratio | params | GFLOPs | ONNX MB | latency p50 / p99 ms | speed-up | "
             "test AP50 before → after FT | test AP50-95 before → after | test F1 before → after | val AP50 after |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in [baseline, *results]:
        before = r.get("before_finetune", r["after_finetune"])["test"]
        after = _final(r)["test"]
        lines.append(
            f"| {r['method']} | {r['ratio']:.1f} | {r['params']:,} | {r['gflops']:.3f} | {r['onnx_bytes'] / 1e6:.2f} | "
            f"{r['latency_ms']['p50']:.2f} / {r['latency_ms']['p99']:.2f} | {base_lat / r['latency_ms']['p50']:.2f}x | "
            f"{before['ap50']:.3f} → {after['ap50']:.3f} | {before['ap50_95']:.3f} → {after['ap50_95']:.3f} | "
            f"{before['f1']:.3f} → {after['f1']:.3f} | {_final(r)['val']['ap50']:.3f} |")
    (docs / "pruning_table.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", required=True)
    parser.add_argument("--data", required=True)
    parser.add_argument("--out", default="runs/study")
    parser.add_argument("--methods", nargs="+", default=list(METHODS))
    parser.add_argument("--ratios", nargs="+", type=float, default=list(RATIOS))
    parser.add_argument("--finetune-epochs", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--bench-iterations", type=int, default=200)
    parser.add_argument("--docs", default="docs", help="where the table and the plot go")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args()
    results = [run_variant(args, m, r) for m in args.methods for r in args.ratios]
    baseline = {"method": "baseline", "ratio": 0.0, **summary(load_checkpoint(args.weights).model),
                "after_finetune": {"test": evaluate(Path(args.weights), Path(args.data), "test"),
                                   "val": evaluate(Path(args.weights), Path(args.data), "val")}}
    measure_latency(args, baseline, results)
    Path(args.out, "study.json").write_text(json.dumps({"baseline": baseline, "variants": results}, indent=2))
    write_report(args, baseline, results)


if __name__ == "__main__":
    main()
