"""Latency of the pruning study's architectures, measured side by side on this machine.

    python -m engine.benchmarks.study_latency --study runs/study

Reads ``study.json`` (written by ``python -m training.prune_study --phase report``), exports
the baseline and one trained checkpoint per ratio to ONNX (under a uniform prune every
criterion and seed leaves the same widths, so one per ratio times them all), times them
interleaved in one process with onnxruntime on the CPU, and writes ``latency.json`` beside
the study: ``{"baseline": {...}, "ratio-0.5": {...}}``. The next report shows it. This lives
on the runtime side because training may not import the engine.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from engine.benchmarks.latency import BenchTarget, bench_frame, run_bench
from engine.export import default_check_images, export_onnx


def architectures(study: dict[str, Any]) -> dict[str, Path]:
    """``{"baseline": weights, "ratio-R": weights of the first uniform variant at R}``."""
    chosen: dict[str, Path] = {"baseline": Path(study["baseline_weights"])}
    for v in study["variants"]:
        if v["scope"] == "uniform":
            chosen.setdefault(f"ratio-{v['ratio']:.1f}", Path(v["weights"]))
    return chosen


def measure(study_dir: Path, iterations: int = 200, show_progress: bool = True) -> dict[str, Any]:
    study_file = study_dir / "study.json"
    if not study_file.is_file():
        raise FileNotFoundError(f"{study_file}: no study report yet; run python -m training.prune_study --phase report")
    models = architectures(json.loads(study_file.read_text()))
    onnx_dir = study_dir / "onnx"
    from models import load_checkpoint  # torch: only this tool, not the runtime, needs it

    # Every network at the size it was trained at: a baseline shipped to run larger is timed
    # where the pruned ones were trained, so the ratio is pruning's alone.
    paths = [export_onnx(w, onnx_dir / f"{label}.onnx", check_images=None,
                         input_size=load_checkpoint(w).trained_input_size).path for label, w in models.items()]
    frames = [p for p in default_check_images(1) if p.is_file()]
    report = run_bench([BenchTarget(p, "onnxruntime-cpu") for p in paths], iterations=iterations,
                       frame=bench_frame(frames[0]) if frames else None, show_progress=show_progress)
    latency = {label: {"p50": m["latency_ms"]["inference"]["p50"], "p99": m["latency_ms"]["inference"]["p99"],
                       "onnx_bytes": m["file_bytes"]}
               for label, m in zip(models, report["models"], strict=True)}
    (study_dir / "latency.json").write_text(json.dumps(latency, indent=2))
    return latency


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m engine.benchmarks.study_latency", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--study", default="runs/study", help="the study's work folder (holds study.json)")
    parser.add_argument("--iterations", type=int, default=200)
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    for label, figures in measure(Path(args.study), args.iterations, not args.quiet).items():
        print(f"{label}: inference p50 {figures['p50']:.2f} ms, p99 {figures['p99']:.2f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
