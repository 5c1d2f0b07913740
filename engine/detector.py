"""``Detector``: one BGR frame in, detections in frame pixels out, on any backend.

Backend choice ``"auto"`` tries, in order: native TensorRT (for a ``.engine`` file, or a
``.onnx`` with a built engine beside it), onnxruntime on CUDA, onnxruntime on the CPU;
``"onnxruntime"`` tries only the two onnxruntime providers, CUDA first. ``selection``
records which one it chose and why each one before it was passed over.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from engine.backends.base import Backend, BackendUnavailable
from engine.detections import Detections
from engine.model_info import ModelFormatError, ModelInfo, read_onnx_info
from engine.postprocess import (
    DEFAULT_CONF,
    DEFAULT_IOU,
    DEFAULT_MERGE_SCORE_RATIO,
    check_conf,
    check_iou,
    check_merge,
    postprocess,
)
from engine.preprocess import Preprocessor
from engine.trt_engine.engine_file import EngineMismatch

BACKENDS = ("auto", "tensorrt", "onnxruntime", "onnxruntime-cuda", "onnxruntime-tensorrt", "onnxruntime-cpu",
            "torch")
# Choices that stand for "the first of these that works here"; anything else is opened as named.
ONNXRUNTIME_BEST = ("onnxruntime-cuda", "onnxruntime-cpu")
AUTO_ORDER = {"engine": ("tensorrt",), "safetensors": ("torch",), "onnx": ("tensorrt", *ONNXRUNTIME_BEST)}
WARMUP_RUNS = 3


@dataclass
class StageTimes:
    """Milliseconds spent in each stage of the last frame."""

    preprocess: float = 0.0
    inference: float = 0.0
    postprocess: float = 0.0

    @property
    def total(self) -> float:
        return self.preprocess + self.inference + self.postprocess


@dataclass
class BackendSelection:
    chosen: str
    passed_over: dict[str, str] = field(default_factory=dict)
    requested: str | None = None  # what was asked for, when that was a choice among several

    def explain(self) -> str:
        picked = f" (best available for '{self.requested}')" if self.requested not in (None, self.chosen) else ""
        lines = [f"backend: {self.chosen}{picked}"]
        lines += [f"  not {name}: {why}" for name, why in self.passed_over.items()]
        return "\n".join(lines)


def model_kind(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix in (".onnx", ".engine", ".safetensors"):
        return suffix[1:]
    raise ModelFormatError(f"{path}: unknown model type {suffix!r}; expected .onnx, .engine or .safetensors")


def _open_backend(name: str, path: Path, threads: int, spin: bool = True, no_sidecar: bool = False) -> Backend:
    """Create backend ``name`` for ``path`` or raise BackendUnavailable saying why not."""
    kind = model_kind(path)
    if name == "tensorrt":
        from engine.backends.trt import TensorRTBackend

        engine_path = path if kind == "engine" else path.with_suffix(".engine")
        if not engine_path.is_file():
            raise BackendUnavailable(f"no TensorRT engine at {engine_path} (build one with 'polypscope build-engine')")
        return TensorRTBackend(engine_path, unchecked=no_sidecar)
    if name == "torch":
        if kind != "safetensors":
            raise BackendUnavailable(f"the torch backend runs .safetensors checkpoints, not .{kind}")
        from engine.backends.torch_backend import TorchBackend

        return TorchBackend(path, threads=threads)
    if name.startswith("onnxruntime-"):
        if kind != "onnx":
            raise BackendUnavailable(f"onnxruntime runs .onnx models, not .{kind}")
        from engine.backends.onnxruntime_backend import OnnxRuntimeBackend

        return OnnxRuntimeBackend(path, read_onnx_info(path), device=name.split("-", 1)[1], threads=threads,
                                  spin=spin)
    raise ValueError(f"unknown backend {name!r}; choose from {BACKENDS}")


def open_backend(path: str | Path, backend: str = "auto", threads: int = 0,
                 spin: bool = True, no_sidecar: bool = False) -> tuple[Backend, BackendSelection]:
    p = Path(path)
    if not p.is_file():
        raise ModelFormatError(f"{p}: no such model file")
    kind = model_kind(p)
    if backend == "auto":
        order = AUTO_ORDER[kind]
    elif backend == "onnxruntime":
        order = ONNXRUNTIME_BEST
    else:
        return _open_backend(backend, p, threads, spin, no_sidecar), BackendSelection(backend)
    passed: dict[str, str] = {}
    for name in order:
        try:
            return _open_backend(name, p, threads, spin, no_sidecar), BackendSelection(name, passed, backend)
        except (BackendUnavailable, EngineMismatch) as exc:  # a stale engine is passed over, with the fix
            passed[name] = str(exc)
    raise BackendUnavailable(f"{p}: no backend can run it: " + "; ".join(f"{k}: {v}" for k, v in passed.items()))


class Detector:
    """Letterbox -> backend -> NMS -> frame pixels. Not thread-safe: one per thread.

    ``spin=False`` stops onnxruntime's worker threads from busy-waiting between runs: needed
    whenever several sessions share the cores (an idle session's spinning threads would
    steal time from the one running), at the cost of a little wake-up latency.

    ``conf`` must lie in (0, 1) and ``iou`` in (0, 1], in the constructor and whenever they
    are set later (the app sets them from sliders): a ValueError names the one that is not.
    ``conf=None`` uses the model's operating threshold (chosen on val and written into the
    model by export), or ``DEFAULT_CONF`` for a model without one. ``merge_iou=None`` likewise
    merges boxes after NMS as the model was validated (its ``box_merge_iou`` metadata; plain
    NMS for a model without it); 0 turns merging off, a value in (0, 1] sets it."""

    def __init__(self, model: str | Path, backend: str = "auto", *, conf: float | None = None,
                 iou: float = DEFAULT_IOU, threads: int = 0, warmup: int = WARMUP_RUNS, spin: bool = True,
                 no_sidecar: bool = False, merge_iou: float | None = None) -> None:
        if merge_iou is not None:
            check_merge(merge_iou, DEFAULT_MERGE_SCORE_RATIO)  # before the (slow) backend is opened
        if conf is not None:
            self.conf = conf  # checked before the (slow) backend is opened
        self.iou = iou
        if threads < 0:
            raise ValueError(f"threads must be >= 0 (0: all cores), got {threads}")
        self.model_path = Path(model)
        self.backend, self.selection = open_backend(self.model_path, backend, threads, spin, no_sidecar)
        self.info: ModelInfo = self.backend.info  # type: ignore[attr-defined]
        if conf is None:
            self.conf = self.model_conf
        self.merge_iou, self.merge_score_ratio = check_merge(
            self.info.box_merge_iou if merge_iou is None else merge_iou,
            self.info.box_merge_score_ratio or DEFAULT_MERGE_SCORE_RATIO)
        self.preprocess = Preprocessor(self.info.input_size, self.info.letterbox_colour)
        self.last_times = StageTimes()
        if warmup:
            self.warm_up(warmup)

    @property
    def model_conf(self) -> float:
        """The threshold the model comes with: its validated operating point, else the
        generic default (what ``conf=None`` uses, and what the app goes back to)."""
        return self.info.operating_threshold or DEFAULT_CONF

    @property
    def conf(self) -> float:
        return self._conf

    @conf.setter
    def conf(self, value: float) -> None:
        self._conf = check_conf(value)

    @property
    def iou(self) -> float:
        return self._iou

    @iou.setter
    def iou(self, value: float) -> None:
        self._iou = check_iou(value)

    @property
    def backend_name(self) -> str:
        return self.backend.name

    def warm_up(self, runs: int = WARMUP_RUNS) -> None:
        """Run the network a few times so the first real frame is not slow (allocations,
        kernel selection, lazy initialisation)."""
        blank = np.full((self.info.input_size, self.info.input_size, 3), 114, np.uint8)
        for _ in range(runs):
            self(blank)

    def __call__(self, frame: np.ndarray) -> Detections:
        t0 = time.perf_counter()
        tensor, box = self.preprocess(frame)
        t1 = time.perf_counter()
        raw = self.backend.infer(tensor)
        t2 = time.perf_counter()
        dets = postprocess(raw, box, self.conf, self.iou, merge_iou=self.merge_iou,
                           merge_score_ratio=self.merge_score_ratio)
        t3 = time.perf_counter()
        self.last_times = StageTimes((t1 - t0) * 1e3, (t2 - t1) * 1e3, (t3 - t2) * 1e3)
        return dets

    def close(self) -> None:
        self.backend.close()
