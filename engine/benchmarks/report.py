"""``make bench``: time the shipped models on this machine and write ``docs/performance.md``.

Two runs on onnxruntime's CPU provider, on a 1280x1024 frame made from a Kvasir-SEG
validation image when the data is around (a synthetic frame otherwise):

1. the default (pruned) model alone, as the app runs it -- the absolute latency bars;
2. the default and the unpruned baseline interleaved frame by frame in one process (with
   onnxruntime's thread spinning off, so neither steals from the other) -- the speed-up.

The baseline's ONNX is exported to a temporary folder when it is not shipped.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
from datetime import datetime, timezone
from pathlib import Path

from engine.atomic import atomic_write_text
from engine.benchmarks.latency import BenchTarget, bench_frame, format_report, run_bench

MODELS = Path(__file__).resolve().parents[2] / "assets" / "models"
BARS = {"inference_p50_ms": 8.0, "total_p50_ms": 12.0, "speedup_vs_baseline": 1.7}


def _frame_source() -> Path | None:
    from engine.export import default_check_images

    images = default_check_images(limit=1)
    return images[0] if images and images[0].is_file() else None


def _baseline_onnx(tmp: Path) -> Path:
    shipped = MODELS / "baseline.onnx"
    if shipped.is_file():
        return shipped
    from engine.export import export_onnx

    return export_onnx(MODELS / "baseline.safetensors", tmp / "baseline.onnx", check_images=None).path


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def _rows(models: list[dict]) -> list[str]:
    rows = [
        "| model | params | GFLOPs | ONNX MB | preprocess p50 | inference p50 / p90 / p99 | postprocess p50 | total p50 / p99 |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for m in models:
        lat = m["latency_ms"]
        rows.append(f"| {Path(m['model']).name} | {m['params']:,} | {m['gflops']:.3f} | {m['file_bytes'] / 1e6:.2f} | "
                    f"{lat['preprocess']['p50']:.2f} | {lat['inference']['p50']:.2f} / {lat['inference']['p90']:.2f} / "
                    f"{lat['inference']['p99']:.2f} | {lat['postprocess']['p50']:.2f} | "
                    f"{lat['total']['p50']:.2f} / {lat['total']['p99']:.2f} |")
    return rows


def render(alone: dict, side_by_side: dict, command: str) -> str:
    d = alone["models"][0]["latency_ms"]
    speedup = 1 / side_by_side["ratio_inference_p50"]
    checks = [
        ("median inference of the default model", f"{d['inference']['p50']:.2f} ms", f"<= {BARS['inference_p50_ms']} ms",
         d["inference"]["p50"] <= BARS["inference_p50_ms"]),
        ("median total (1280x1024 frame)", f"{d['total']['p50']:.2f} ms", f"<= {BARS['total_p50_ms']} ms",
         d["total"]["p50"] <= BARS["total_p50_ms"]),
        ("inference speed-up over the baseline", f"{speedup:.2f}x", f">= {BARS['speedup_vs_baseline']}x",
         speedup >= BARS["speedup_vs_baseline"]),
    ]
    lines = [
        "# Performance",
        "",
        f"Measured {datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')} on {_cpu_name()}, "
        f"{os.cpu_count()} cores, onnxruntime CPU provider, frame {alone['frame'][0]}x{alone['frame'][1]}, "
        f"{alone['iterations']} iterations after warm-up in each run. Command: `{command}`.",
        "",
        "## The default model alone (as the app runs it)",
        "",
        *_rows(alone["models"]),
        "",
        "## Side by side with the unpruned baseline",
        "",
        *_rows(side_by_side["models"]),
        "",
        "All times in milliseconds. In the side-by-side run the two models ran interleaved frame by frame "
        "in one process with onnxruntime's thread spinning off, so both saw the same machine load; the "
        "ratio of their medians is the figure to compare, not the absolute times.",
        "",
        "| bar | measured | target | met |",
        "|---|---|---|---|",
        *[f"| {name} | {value} | {target} | {'yes' if ok else 'NO'} |" for name, value, target, ok in checks],
        "",
        "Raw numbers: `docs/performance.json` (`alone` and `side_by_side`). Reduced precision (INT8 and fp16 "
        "copies, on this CPU and for TensorRT), the GPU path and the app's thread split are measured in "
        "`docs/tensorrt.md` and `docs/realtime.md`.",
        "",
    ]
    return "\n".join(lines)


KEEP_MARK = "<!-- sections below are measured by other commands and kept by make bench -->"


def kept_sections(path: Path) -> str:
    """What follows :data:`KEEP_MARK` in the current page (measurements ``make bench`` does
    not redo, such as INT8 against float32), so regenerating the page keeps them."""
    if not path.is_file():
        return ""
    text = path.read_text()
    at = text.find(KEEP_MARK)
    return "" if at < 0 else "\n" + text[at:]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default="docs/performance.md")
    parser.add_argument("--iterations", type=int, default=300)
    parser.add_argument("--threads", type=int, default=0)
    args = parser.parse_args()
    default = MODELS / "default.onnx"
    if not default.is_file():
        raise SystemExit(f"{default} is missing: it is produced by the pruning study (docs/pruning.md)")
    with tempfile.TemporaryDirectory() as tmp:
        baseline = _baseline_onnx(Path(tmp))
        source = _frame_source()
        frame = bench_frame(source) if source else None
        alone = run_bench([BenchTarget(default, "onnxruntime-cpu")], iterations=args.iterations,
                          threads=args.threads, frame=frame)
        side_by_side = run_bench([BenchTarget(default, "onnxruntime-cpu"), BenchTarget(baseline, "onnxruntime-cpu")],
                                 iterations=args.iterations, threads=args.threads, frame=frame)
    print(format_report(alone))
    print(format_report(side_by_side))
    out = Path(args.out)
    atomic_write_text(out.with_suffix(".json"), json.dumps({"alone": alone, "side_by_side": side_by_side}, indent=2))
    atomic_write_text(out, render(alone, side_by_side, "make bench") + kept_sections(out))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
