"""Command-line handlers for export, quantize, build-engine and bench (dispatched by ``app.cli``)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from engine.atomic import atomic_write_text


def run_export(args: argparse.Namespace) -> int:
    from engine.export import default_check_images, export_onnx, write_triton_repository
    from models import read_header

    weights = Path(args.weights)
    read_header(weights)  # a wrong --weights (an .onnx, a .pt) fails in one line, before anything is printed
    out = Path(args.out) if args.out else weights.with_suffix(".onnx")
    images = [Path(p) for p in args.check_images] if args.check_images else default_check_images()
    if not images:
        print("warning: no real frames found for the parity check (set POLYPSCOPE_DATA or pass "
              "--check-images); checking on synthetic frames", file=sys.stderr)
    steps = ["export", "simplify", "check", "parity"]
    print(f"exporting {weights} -> {out} ({' -> '.join(steps)})", file=sys.stderr)
    result = export_onnx(weights, out, dynamic=args.dynamic, opset=args.opset, simplify=not args.no_simplify,
                         check_images=images, input_size=getattr(args, "img", None))
    p = result.parity
    print(f"wrote {result.path} ({result.path.stat().st_size / 1e6:.2f} MB, {result.nodes_after} nodes, "
          f"{result.nodes_before} before simplification)")
    if p is not None:
        print(f"parity with torch on {p.images} frames: max |diff| {p.max_abs_diff:.2e}, "
              f"same detections after NMS: {p.same_detections}")
    if args.triton:
        repo = write_triton_repository(result.path, result.info, args.triton,
                                       max_batch=args.triton_max_batch if args.dynamic else 0)
        print(f"Triton model repository: {repo}")
    return 0


def run_quantize(args: argparse.Namespace) -> int:
    from engine.export import default_check_images
    from engine.precision.calibration import calibration_images
    from engine.precision.fp16 import write_fp16
    from engine.precision.int8 import quantize_int8
    from engine.precision.parity import parity_on_frames

    onnx = Path(args.onnx)
    out = Path(args.out) if args.out else onnx.with_name(f"{onnx.stem}.{args.precision}.onnx")
    if args.precision == "int8":
        if not args.calib:
            raise SystemExit("quantize --precision int8 needs --calib: TRAINING frames (e.g. --calib DATA "
                             "--calib-split DATA/splits/train.txt)")
        quantize_int8(onnx, out, args.calib, calib_split=args.calib_split, max_images=args.calib_images,
                      method=args.method, extra_exclude=tuple(args.keep_float), target=args.target)
    else:
        write_fp16(onnx, out)
    frames = calibration_images(args.check, args.check_images) if args.check else default_check_images(args.check_images)
    print(f"wrote {out}")
    if not frames:
        print("no frames to compare detections on (give --check FOLDER)")
        return 0
    parity = parity_on_frames(onnx, out, frames)
    print(f"{args.precision} against float32: {parity.summary()}")
    if args.json_out:
        atomic_write_text(args.json_out, json.dumps({"model": str(out), "reference": str(onnx), **parity.to_dict()},
                                                    indent=2))
    return 0


def run_build_engine(args: argparse.Namespace) -> int:
    from engine.trt_engine.build import BuildOptions, build_engine

    onnx = Path(args.onnx)
    out = Path(args.out) if args.out else onnx.with_suffix(".engine")
    opts = BuildOptions(onnx=onnx, out=out, precision=args.precision,
                        calib=Path(args.calib) if args.calib else None,
                        calib_split=Path(args.calib_split) if args.calib_split else None,
                        workspace_mb=args.workspace_mb, max_batch=args.max_batch)
    sidecar = build_engine(opts)
    print(f"wrote {out} ({sidecar.precision}, {sidecar.gpu_name}, TensorRT {sidecar.tensorrt_version}) "
          f"and {out.name}.json")
    return 0


def run_bench(args: argparse.Namespace) -> int:
    from engine.benchmarks.latency import BenchTarget, bench_frame, format_report, run_bench

    targets = [BenchTarget(Path(args.model), args.backend)]
    if args.vs:
        targets.append(BenchTarget(Path(args.vs), args.vs_backend or args.backend))
    frame = bench_frame(Path(args.frame)) if args.frame else None
    report = run_bench(targets, iterations=args.iterations, warmup=args.warmup, threads=args.threads,
                       frame=frame, show_progress=not args.quiet)
    print(format_report(report))
    if args.json_out:
        atomic_write_text(args.json_out, json.dumps(report, indent=2))
    return 0
