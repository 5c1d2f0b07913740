"""The pruning study: every criterion at every ratio, before and after fine-tuning, with
accuracy on test and latency measured side by side. Writes ``docs/pruning_table.md``,
``docs/pruning_tradeoff.png`` and ``study.json``; resumable (finished variants are skipped).

    python -m training.prune_study --weights assets/models/baseline.safetensors \\
        --data ../shared/data/kvasir-seg --out runs/study --finetune-epochs 60 --jobs 4

Two phases, which can run on different machines: ``--phase prune`` prunes, recalibrates
and fine-tunes every variant (``--jobs N`` runs N variants at once, each in its own
process -- worth it on a GPU machine, where data loading is the bottleneck);
``--phase report`` scores every checkpoint on val and test, exports each to ONNX and times
all of them with the baseline, interleaved in one process, on this CPU. ``--phase all``
(the default) does both.

Variants are ``method:ratio:scope``. The default set is every criterion at every ratio with
the same ratio in every layer (``uniform``: the criterion alone decides which channels go,
a clean comparison against the random control) plus Taylor with one global ranking.
The shipped default is chosen on VALIDATION AP50 among variants with at least 50% fewer
FLOPs than the baseline; test figures are reported, never used to choose.
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from models import load_checkpoint
from training.data.data_check import open_checked, print_problems, require_samples
from training.data.loader import ImageCache
from training.evaluation.evaluate import evaluate_model
from training.pruning.prune import PruneJob, run_prune, summary

METHODS = ("taylor", "random", "l1", "bn")
RATIOS = (0.3, 0.5, 0.7)
KEYS = ("ap50", "ap50_95", "f1")
MIN_FLOPS_CUT = 0.5   # the shipped model must have at least this fraction fewer FLOPs


@dataclass(frozen=True)
class Variant:
    method: str
    ratio: float
    scope: str = "uniform"

    @classmethod
    def parse(cls, text: str) -> Variant:
        parts = text.split(":")
        if len(parts) not in (2, 3):
            raise argparse.ArgumentTypeError(f"variant {text!r}: expected method:ratio[:scope], e.g. taylor:0.5:global")
        return cls(parts[0], float(parts[1]), parts[2] if len(parts) == 3 else "uniform")

    @property
    def name(self) -> str:
        return f"{self.method}-{self.scope}-{self.ratio:.1f}"

    def __str__(self) -> str:
        return f"{self.method}:{self.ratio}:{self.scope}"


def default_variants() -> list[Variant]:
    return [Variant(m, r) for m in METHODS for r in RATIOS] + [Variant("taylor", r, "global") for r in RATIOS]


# -- phase 1: prune and fine-tune --------------------------------------------------------

def _paths(out: Path, v: Variant) -> dict[str, Path]:
    folder = out / v.name
    work = folder / "finetuned"  # run_prune's work folder for finetuned.safetensors
    return {"folder": folder, "final": folder / "finetuned.safetensors", "pruned": work / "step1_pruned.safetensors",
            "finetune_run": work / "step1_finetune", "done": folder / "prune_done.json"}


def prune_variant(args: argparse.Namespace, v: Variant) -> None:
    p = _paths(Path(args.out), v)
    if p["done"].is_file():
        return
    p["folder"].mkdir(parents=True, exist_ok=True)
    started = time.time()
    job = PruneJob(Path(args.weights), v.method, v.ratio, p["final"], Path(args.data), scope=v.scope,
                   finetune_epochs=args.finetune_epochs, finetune_lr=args.finetune_lr, seed=args.seed,
                   threads=args.threads, workers=args.workers, device=args.device, show_progress=not args.quiet)
    meta = run_prune(job)
    p["done"].write_text(json.dumps({"minutes": round((time.time() - started) / 60, 2), **meta}, indent=2))


def prune_in_parallel(args: argparse.Namespace, variants: list[Variant]) -> None:
    """Run up to ``--jobs`` variants at once, each a child process with its own log file."""
    pending = [v for v in variants if not _paths(Path(args.out), v)["done"].is_file()]
    running: list[tuple[Variant, subprocess.Popen]] = []
    failed: list[str] = []
    passthrough = ["--weights", args.weights, "--data", args.data, "--out", args.out, "--phase", "prune",
                   "--finetune-epochs", str(args.finetune_epochs), "--finetune-lr", str(args.finetune_lr),
                   "--seed", str(args.seed), "--threads", str(args.threads), "--workers", str(args.workers),
                   "--device", args.device, "--jobs", "1", "--quiet"]
    while pending or running:
        while pending and len(running) < args.jobs:
            v = pending.pop(0)
            folder = _paths(Path(args.out), v)["folder"]
            folder.mkdir(parents=True, exist_ok=True)
            log = (folder / "log.txt").open("ab")
            cmd = [sys.executable, "-m", "training.prune_study", *passthrough, "--variants", str(v)]
            running.append((v, subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)))
            print(f"started {v.name} (log: {folder / 'log.txt'})", flush=True)
        time.sleep(2)
        for item in list(running):
            v, proc = item
            if proc.poll() is not None:
                running.remove(item)
                print(f"finished {v.name}: exit code {proc.returncode}", flush=True)
                if proc.returncode:
                    failed.append(v.name)
    if failed:
        raise SystemExit(f"variants failed: {', '.join(failed)} (see their log.txt)")


# -- phase 2: score, time, report ---------------------------------------------------------

def evaluate(weights: Path, data: Path, split: str) -> dict[str, float]:
    ckpt = load_checkpoint(weights)
    size = ckpt.config.input_size
    index = open_checked(data, split)
    print_problems(index, split)
    require_samples(index, split)
    cache = ImageCache(index.samples, size)
    metrics, _ = evaluate_model(ckpt.model, cache, size, ckpt.config.class_names, bootstrap_reps=0)
    return {k: round(float(metrics[k]), 4) for k in KEYS}


def _epochs_done(run_dir: Path) -> int:
    results = run_dir / "results.csv"
    if not results.is_file():
        return 0
    with results.open() as f:
        return sum(1 for _ in csv.DictReader(f))


def score_variant(args: argparse.Namespace, v: Variant) -> dict[str, Any] | None:
    """Metrics of one variant; a fine-tune cut short is scored from its best epoch so far."""
    p = _paths(Path(args.out), v)
    if not p["pruned"].is_file():
        print(f"{v.name}: not pruned yet, left out of the report")
        return None
    final = p["final"] if p["final"].is_file() else p["finetune_run"] / "best.safetensors"
    result: dict[str, Any] = {"name": v.name, "method": v.method, "ratio": v.ratio, "scope": v.scope,
                              **summary(load_checkpoint(p["pruned"]).model), "weights": str(final),
                              "finetune_epochs": _epochs_done(p["finetune_run"]),
                              "finetune_epochs_planned": args.finetune_epochs,
                              "before_finetune": {s: evaluate(p["pruned"], Path(args.data), s) for s in ("val", "test")}}
    if final.is_file():
        result["after_finetune"] = {s: evaluate(final, Path(args.data), s) for s in ("val", "test")}
    else:
        result["weights"] = str(p["pruned"])
    return result


def _final(result: dict[str, Any]) -> dict[str, Any]:
    return result.get("after_finetune") or result["before_finetune"]


def measure_latency(args: argparse.Namespace, baseline: dict[str, Any], results: list[dict[str, Any]]) -> None:
    """Export every variant and time all of them with the baseline, interleaved, in one run."""
    from engine.benchmark import BenchTarget, bench_frame, run_bench
    from engine.export import default_check_images, export_onnx

    out = Path(args.out)
    paths = [export_onnx(Path(args.weights), out / "baseline.onnx", check_images=None).path]
    for r in results:
        paths.append(export_onnx(Path(r["weights"]), out / r["name"] / "model.onnx", check_images=None).path)
    frames = [p for p in default_check_images(1) if p.is_file()]
    report = run_bench([BenchTarget(p, "onnxruntime-cpu") for p in paths], iterations=args.bench_iterations,
                       frame=bench_frame(frames[0]) if frames else None, show_progress=not args.quiet)
    for r, m in zip([baseline, *results], report["models"], strict=True):
        r["onnx_bytes"] = m["file_bytes"]
        r["latency_ms"] = {"p50": m["latency_ms"]["inference"]["p50"], "p99": m["latency_ms"]["inference"]["p99"],
                           "total_p50": m["latency_ms"]["total"]["p50"]}


def choose_default(baseline: dict[str, Any], results: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Best validation AP50 among the study's fine-tuned variants that cut FLOPs by at least
    half (``--extra`` checkpoints are shown, never chosen)."""
    eligible = [r for r in results if "after_finetune" in r and not r.get("extra")
                and r["gflops"] <= (1 - MIN_FLOPS_CUT) * baseline["gflops"]]
    return max(eligible, key=lambda r: r["after_finetune"]["val"]["ap50"], default=None)


def plot_tradeoff(path: Path, baseline: dict[str, Any], results: list[dict[str, Any]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    markers = dict(zip(METHODS, "osD^", strict=True))
    for r in (r for r in results if r.get("extra")):
        ax.scatter([r["latency_ms"]["p50"]], [_final(r)["test"]["ap50"]], marker="P", s=110, zorder=6,
                   label=r["name"])
    results = [r for r in results if not r.get("extra")]
    series = sorted({(r["method"], r["scope"]) for r in results})
    for method, scope in series:
        pts = sorted((r["latency_ms"]["p50"], _final(r)["test"]["ap50"]) for r in results
                     if r["method"] == method and r["scope"] == scope)
        ax.plot(*zip(*pts, strict=True), marker=markers.get(method, "x"), linestyle="-" if scope == "uniform" else "--",
                label=f"{method} ({scope})")
    ax.scatter([baseline["latency_ms"]["p50"]], [baseline["after_finetune"]["test"]["ap50"]], c="k", marker="*",
               s=140, label="baseline (unpruned)", zorder=5)
    ax.axhline(baseline["after_finetune"]["test"]["ap50"] - 0.01, color="grey", lw=0.8, ls=":",
               label="baseline - 1 point")
    ax.set(xlabel="onnxruntime CPU inference, median ms (batch 1, measured side by side)",
           ylabel="AP50 on test (after fine-tuning)", title="Pruning trade-off: accuracy against measured latency")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _pair(r: dict[str, Any], key: str) -> str:
    after = _final(r)["test"][key]
    if "before_finetune" not in r or "after_finetune" not in r:
        return f"{after:.3f}"
    return f"{r['before_finetune']['test'][key]:.3f} → {after:.3f}"


def table(baseline: dict[str, Any], results: list[dict[str, Any]]) -> str:
    """Markdown: one row per model; 'a → b' is before → after fine-tuning."""
    base_lat, base_flops = baseline["latency_ms"]["p50"], baseline["gflops"]
    lines = ["| variant | params | GFLOPs (cut) | ONNX MB | inference p50 / p99 ms | speed-up | FT epochs | "
             "test AP50 | test AP50-95 | test F1 | val AP50 |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in [baseline, *results]:
        epochs = "–" if r is baseline else f"{r['finetune_epochs']}"
        lines.append(
            f"| {r['name']} | {r['params']:,} | {r['gflops']:.3f} ({100 * (1 - r['gflops'] / base_flops):.0f}%) | "
            f"{r['onnx_bytes'] / 1e6:.2f} | {r['latency_ms']['p50']:.2f} / {r['latency_ms']['p99']:.2f} | "
            f"{base_lat / r['latency_ms']['p50']:.2f}x | {epochs} | {_pair(r, 'ap50')} | {_pair(r, 'ap50_95')} | "
            f"{_pair(r, 'f1')} | {_final(r)['val']['ap50']:.3f} |")
    return "\n".join(lines) + "\n"


def score_extra(args: argparse.Namespace, label: str, weights: Path) -> dict[str, Any]:
    """Any other checkpoint scored and timed with the study (e.g. the default fine-tuned longer)."""
    ckpt = load_checkpoint(weights)
    pruning = ckpt.metadata.get("pruning", {})
    return {"name": label, "method": pruning.get("method", "other"), "ratio": float(pruning.get("ratio", 0.0)),
            "scope": pruning.get("scope", "-"), "extra": True, **summary(ckpt.model), "weights": str(weights),
            "finetune_epochs": ckpt.metadata.get("finetune_epochs_total", ckpt.metadata.get("epoch", 0)),
            "after_finetune": {s: evaluate(weights, Path(args.data), s) for s in ("val", "test")}}


def parse_extra(text: str) -> tuple[str, Path]:
    label, sep, path = text.partition("=")
    if not sep or not label or not Path(path).is_file():
        raise argparse.ArgumentTypeError(f"--extra {text!r}: expected LABEL=PATH to an existing checkpoint")
    return label, Path(path)


def report(args: argparse.Namespace, variants: list[Variant]) -> dict[str, Any]:
    results = [r for r in (score_variant(args, v) for v in variants) if r is not None]
    if not results:
        raise SystemExit(f"{args.out}: no pruned variants to report; run --phase prune first")
    results += [score_extra(args, label, path) for label, path in args.extra]
    weights = Path(args.weights)
    baseline = {"name": "baseline", "method": "baseline", "ratio": 0.0, "scope": "-",
                **summary(load_checkpoint(weights).model),
                "after_finetune": {s: evaluate(weights, Path(args.data), s) for s in ("val", "test")}}
    measure_latency(args, baseline, results)
    chosen = choose_default(baseline, results)
    study = {"baseline": baseline, "variants": results, "default": chosen["name"] if chosen else None,
             "selection": f"highest val AP50 after fine-tuning with >= {MIN_FLOPS_CUT:.0%} fewer FLOPs"}
    Path(args.out, "study.json").write_text(json.dumps(study, indent=2))
    docs = Path(args.docs)
    docs.mkdir(parents=True, exist_ok=True)
    plot_tradeoff(docs / "pruning_tradeoff.png", baseline, results)
    text = table(baseline, results)
    (docs / "pruning_table.md").write_text(text)
    print(text)
    print(f"default by val AP50: {study['default']}")
    return study


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", required=True, help="the trained (unpruned) baseline checkpoint")
    parser.add_argument("--data", required=True, help="dataset folder with train/val/test splits")
    parser.add_argument("--out", default="runs/study", help="work folder (one sub-folder per variant)")
    parser.add_argument("--phase", choices=["prune", "report", "all"], default="all")
    parser.add_argument("--variants", nargs="+", type=Variant.parse, default=None,
                        help="method:ratio[:scope] items (default: 4 criteria x 3 ratios uniform + Taylor global)")
    parser.add_argument("--finetune-epochs", type=int, default=60)
    parser.add_argument("--finetune-lr", type=float, default=0.001)
    parser.add_argument("--jobs", type=int, default=1, help="variants pruned at once (separate processes)")
    parser.add_argument("--workers", type=int, default=1, help="data-loading processes per fine-tune")
    parser.add_argument("--device", default="auto", help="where to score and fine-tune (cpu, cuda)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--bench-iterations", type=int, default=200)
    parser.add_argument("--extra", type=parse_extra, action="append", default=[], metavar="LABEL=PATH",
                        help="also score and time this checkpoint in the report (repeatable)")
    parser.add_argument("--docs", default="docs", help="where the table and the plot go")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    variants = args.variants or default_variants()
    if args.phase in ("prune", "all"):
        if args.jobs > 1:
            prune_in_parallel(args, variants)
        else:
            for v in variants:
                prune_variant(args, v)
    if args.phase in ("report", "all"):
        report(args, variants)


if __name__ == "__main__":
    main()
