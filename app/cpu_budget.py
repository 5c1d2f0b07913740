"""How the app shares the CPU between capture, inference and drawing.

Benchmarks give inference every core and let onnxruntime's threads spin between frames:
the fastest network time on an otherwise idle machine. The app is not that: on two cores a
capture thread decodes video, the GUI thread scales and paints, and the detector runs
between them. Spinning inference threads burn the core the GUI needs while they wait for
the next frame, and OpenCV's own thread pool (its resize and colour conversion parallelise
over rows) competes with both. So the app's detector gets ``cores - 1`` inference threads
(at least one), no spinning, and OpenCV runs single-threaded. ``docs/realtime.md`` has the
measurement this was chosen by (capture-to-display p99 before and after, demo clip and a
1280x1024 clip, through the real window). ``POLYPSCOPE_INFERENCE_THREADS`` overrides.
"""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class CpuBudget:
    inference_threads: int   # onnxruntime intra-op threads (0: all cores)
    spin: bool               # onnxruntime threads spin-wait between runs
    opencv_threads: int      # cv2.setNumThreads: 0 sequential, < 0 OpenCV's default pool

    def describe(self) -> str:
        opencv = "sequential" if self.opencv_threads == 0 else "default pool" if self.opencv_threads < 0 \
            else f"{self.opencv_threads} threads"
        return (f"{self.inference_threads or 'all'} inference thread(s), spinning {'on' if self.spin else 'off'}, "
                f"OpenCV {opencv}")


BENCHMARK = CpuBudget(inference_threads=0, spin=True, opencv_threads=-1)  # what the app used before


def app_budget(cores: int | None = None) -> CpuBudget:
    """The app's split for a machine with ``cores`` CPUs (default: those this process may use)."""
    override = os.environ.get("POLYPSCOPE_INFERENCE_THREADS")
    if override:
        try:
            threads = int(override)
        except ValueError:
            raise ValueError(f"POLYPSCOPE_INFERENCE_THREADS={override!r}: expected a whole number") from None
        return CpuBudget(max(0, threads), spin=False, opencv_threads=0)
    if cores is None:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return CpuBudget(inference_threads=max(1, cores - 1), spin=False, opencv_threads=0)


def apply_opencv_threads(budget: CpuBudget) -> None:
    import cv2

    cv2.setNumThreads(budget.opencv_threads)
