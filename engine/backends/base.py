"""The interface every inference backend implements."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np


class BackendUnavailable(RuntimeError):
    """This backend cannot run here (library missing, no GPU, wrong file); says why."""


@runtime_checkable
class Backend(Protocol):
    """Runs the network: ``[1, 3, S, S]`` float32 input -> ``[1, N, 5 + C]`` float32 output.

    ``infer`` may return a buffer that the next call overwrites; copy it to keep it.
    """

    #: Short name shown to users, e.g. "onnxruntime-cpu", "tensorrt".
    name: str

    def infer(self, tensor: np.ndarray) -> np.ndarray: ...

    def close(self) -> None: ...
