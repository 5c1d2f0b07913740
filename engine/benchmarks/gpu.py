"""Every GPU measurement of the runtime path in one prepared run, results as JSON as it goes.

    PYTHONPATH=. python -m engine.benchmarks.gpu --onnx assets/models/default.onnx \\
        --weights assets/models/default.safetensors --out "$OUT/gpu-bench.json" --time-limit 420

Sections, each timed on the same frame (1280x1024 and 1920x1080), per-stage medians and
p99 in milliseconds, the GPU synchronised before every clock read:

1. pre-processing: OpenCV letterbox on the CPU against the GPU letterbox from the uint8
   frame (``engine/benchmarks/gpu_letterbox.py``), upload included;
2. onnxruntime: CPU provider; CUDA provider fed numpy (host-bound, as before); CUDA with
   input and output bound on the device; the same with CUDA graphs;
3. torch: float32, float16, float16 with a CUDA graph;
4. the whole GPU path: GPU letterbox -> torch fp16 graph -> download -> NMS.

Where no GPU is, it runs what the CPU can (sections 1-3, CPU rows), writes why it stopped
("stopped_before") and exits 0. If onnxruntime cannot load its CUDA provider against this
machine's CUDA, the exact error is recorded. The JSON is rewritten after every section, and
the run stops starting new sections at ``--time-limit``: an interrupted lease keeps all it
measured.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from engine.atomic import atomic_write_text
from engine.benchmarks.latency import bench_frame, percentiles
from engine.model_info import read_onnx_info
from engine.postprocess import postprocess
from engine.preprocess import Preprocessor

FRAME_SIZES = ((1280, 1024), (1920, 1080))


class Run:
    """The report, written after each section; knows the time left."""

    def __init__(self, out: Path, time_limit: float, iterations: int) -> None:
        self.out, self.deadline, self.iterations = out, time.monotonic() + time_limit, iterations
        self.report: dict[str, Any] = {"sections": {}, "started": time.strftime("%Y-%m-%d %H:%M:%S")}

    def time_left(self) -> bool:
        return time.monotonic() < self.deadline

    def save(self) -> None:
        atomic_write_text(self.out, json.dumps(self.report, indent=2))

    def record(self, section: str, name: str, value: Any) -> None:
        self.report["sections"].setdefault(section, {})[name] = value
        self.save()

    def stop(self, why: str) -> None:
        self.report["stopped_before"] = why
        self.save()


def timed(fn: Callable[[], Any], iterations: int, sync: Callable[[], None] = lambda: None,
          warmup: int = 10) -> dict[str, float]:
    for _ in range(warmup):
        fn()
    sync()
    samples = []
    for _ in range(iterations):
        t0 = time.perf_counter()
        fn()
        sync()
        samples.append((time.perf_counter() - t0) * 1e3)
    return percentiles(samples)


def environment() -> dict[str, Any]:
    import onnxruntime as ort

    env: dict[str, Any] = {"python": platform.python_version(), "onnxruntime": ort.__version__,
                           "ort_providers": ort.get_available_providers(), "cpu": platform.processor()}
    try:
        import torch

        env["torch"] = torch.__version__
        env["cuda"] = torch.cuda.is_available()
        if env["cuda"]:
            env["gpu"] = torch.cuda.get_device_name(0)
            env["cuda_runtime"] = torch.version.cuda
    except ImportError:
        env["torch"] = None
        env["cuda"] = False
    return env


def ort_cuda_error(onnx: Path) -> str | None:
    """``None`` when onnxruntime runs this model on its CUDA provider, else the exact error."""
    import onnxruntime as ort

    try:
        session = ort.InferenceSession(str(onnx), providers=["CUDAExecutionProvider", "CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own types
        return f"{type(exc).__name__}: {exc}"
    active = session.get_providers()
    return None if active[0] == "CUDAExecutionProvider" else f"fell back to {active}"


def fix_hint(error: str) -> str:
    """What usually makes onnxruntime's CUDA provider load, from its error text."""
    if "libcudnn" in error or "libcublas" in error or "libcudart" in error or "libcufft" in error:
        return ("onnxruntime-gpu cannot find the CUDA/cuDNN libraries it was built against: install them "
                "(pip install nvidia-cudnn-cu12 nvidia-cublas-cu12 nvidia-cuda-runtime-cu12 for a CUDA 12 build) "
                "or an onnxruntime-gpu built for this machine's CUDA")
    if "fell back" in error:
        return "the CUDA provider is listed but did not start: check nvidia-smi and the CUDA version of onnxruntime-gpu"
    return "see onnxruntime's CUDA provider requirements for this onnxruntime-gpu version"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m engine.benchmarks.gpu", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--onnx", required=True, help="the exported model")
    parser.add_argument("--weights", help="its .safetensors checkpoint (torch rows; needs torch)")
    parser.add_argument("--out", required=True, help="JSON report, rewritten after every section")
    parser.add_argument("--time-limit", type=float, default=420.0, help="start no section after this (s)")
    parser.add_argument("--iterations", type=int, default=300)
    args = parser.parse_args(argv)
    run = Run(Path(args.out), args.time_limit, args.iterations)
    env = environment()
    run.report["environment"] = env
    onnx = Path(args.onnx)
    info = read_onnx_info(onnx)
    frames = {f"{w}x{h}": bench_frame(size=(w, h)) for w, h in FRAME_SIZES}
    torch = None
    sync: Callable[[], None] = lambda: None  # noqa: E731
    if env["cuda"]:
        import torch

        sync = torch.cuda.synchronize

    # 1. pre-processing
    cpu_pre = Preprocessor(info.input_size, info.letterbox_colour)
    for label, frame in frames.items():
        run.record("preprocess", f"cpu-opencv {label}", timed(lambda f=frame: cpu_pre(f), args.iterations))
    if env["cuda"]:
        from engine.benchmarks.gpu_letterbox import GpuLetterbox

        gpu_pre = GpuLetterbox(info.input_size, info.letterbox_colour, "cuda")
        for label, frame in frames.items():
            run.record("preprocess", f"gpu-from-uint8 {label}", timed(lambda f=frame: gpu_pre(f), args.iterations, sync))

    # 2. onnxruntime
    import onnxruntime as ort

    from engine.backends.onnxruntime_backend import OnnxRuntimeBackend

    tensor, _ = cpu_pre(frames["1280x1024"])
    tensor = tensor.copy()
    cpu = OnnxRuntimeBackend(onnx, info, "cpu")
    run.record("onnxruntime", "cpu", timed(lambda: cpu.infer(tensor), args.iterations))
    from engine.backends.onnxruntime_backend import nvidia_driver_present

    env["nvidia_driver"] = nvidia_driver_present()
    if not env["cuda"] and not env["nvidia_driver"]:
        run.stop("no NVIDIA driver and no CUDA device for torch here: GPU sections not run")
        return _torch_cpu_row(run, args, tensor)
    error = ort_cuda_error(onnx)
    run.record("onnxruntime", "cuda_provider_error", error)
    if error is not None:
        run.record("onnxruntime", "cuda_provider_fix", fix_hint(error))
    if error is None and run.time_left():
        plain = ort.InferenceSession(str(onnx), providers=["CUDAExecutionProvider"])
        feed = {info.input_name: tensor}
        run.record("onnxruntime", "cuda host-bound (session.run)", timed(lambda: plain.run(None, feed), args.iterations))
        bound = OnnxRuntimeBackend(onnx, info, "cuda")
        run.record("onnxruntime", "cuda device-bound", timed(lambda: bound.infer(tensor), args.iterations))
        try:
            graph = OnnxRuntimeBackend(onnx, info, "cuda", cuda_graph=True)
            run.record("onnxruntime", "cuda device-bound + cuda graph", timed(lambda: graph.infer(tensor), args.iterations))
        except Exception as exc:  # the provider refuses graphs for some graphs/versions: say which
            run.record("onnxruntime", "cuda graph error", f"{type(exc).__name__}: {exc}")

    # 3. torch, 4. the whole GPU path
    if not env["cuda"]:
        run.stop("torch sees no CUDA device (or is not installed): torch and GPU-letterbox sections not run")
        return 0
    if args.weights and run.time_left():
        from engine.backends.torch_backend import TorchBackend

        device_tensor = torch.from_numpy(tensor).cuda()
        for label, kw in (("fp32", {}), ("fp16", {"half": True}), ("fp16 + cuda graph", {"half": True, "cuda_graph": True})):
            if not run.time_left():
                break
            backend = TorchBackend(args.weights, "cuda", **kw)
            run.record("torch", label, timed(lambda b=backend: b.infer_device(device_tensor), args.iterations, sync))
        if run.time_left():
            from engine.benchmarks.gpu_letterbox import GpuLetterbox

            pre = GpuLetterbox(info.input_size, info.letterbox_colour, "cuda", dtype=torch.float16)
            net = TorchBackend(args.weights, "cuda", half=True, cuda_graph=True)
            for label, frame in frames.items():
                def whole(f=frame):
                    x, box = pre(f)
                    return postprocess(net.infer_device(x).float().cpu().numpy(), box,
                                       info.operating_threshold or 0.25)
                run.record("gpu path", f"letterbox+fp16 graph+download+nms {label}", timed(whole, args.iterations, sync))
    if not run.time_left():
        run.stop(f"time limit of {args.time_limit:.0f} s reached")
    run.report["finished"] = time.strftime("%Y-%m-%d %H:%M:%S")
    run.save()
    return 0


def _torch_cpu_row(run: Run, args: argparse.Namespace, tensor: np.ndarray) -> int:
    if args.weights:
        try:
            from engine.backends.torch_backend import TorchBackend
        except ImportError:
            return 0
        from engine.backends.base import BackendUnavailable

        try:
            backend = TorchBackend(args.weights, "cpu")
        except BackendUnavailable as exc:
            run.record("torch", "unavailable", str(exc))
            return 0
        run.record("torch", "cpu fp32", timed(lambda: backend.infer(tensor), max(20, args.iterations // 5)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
