"""PyTorch backend for development: runs a ``.safetensors`` checkpoint directly.

Like the exporter, it is the only part of the engine that touches torch and ``models``,
and only when chosen; the clinic runtime never imports it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from engine.backends.base import BackendUnavailable
from engine.export_metadata import box_merge_fields, model_info_from_config, operating_threshold
from engine.model_info import sha256_file


class TorchBackend:
    """``half=True`` runs the network in float16 (CUDA); ``cuda_graph=True`` captures one
    forward pass on a static input buffer and replays it per frame (CUDA only): no Python
    or kernel-launch overhead left, which is most of a small network's GPU time."""

    def __init__(self, path: str | Path, device: str = "cpu", threads: int = 0, half: bool = False,
                 cuda_graph: bool = False) -> None:
        try:
            import torch
        except ImportError:
            raise BackendUnavailable("torch is not installed (install the 'train' extra)") from None
        from models import load_checkpoint

        if threads:
            torch.set_num_threads(threads)
        self._torch = torch
        self.device = torch.device(device)
        if (half or cuda_graph) and self.device.type != "cuda":
            raise BackendUnavailable("half precision and CUDA graphs need a CUDA device")
        ckpt = load_checkpoint(path, device=self.device)
        self.dtype = torch.float16 if half else torch.float32
        self.model = ckpt.model.eval().to(self.dtype)
        self.model.decoder.float()  # the decode turns offsets into pixels: float32, as in the fp16 ONNX
        self.info = model_info_from_config(ckpt.config, sha256_file(path),
                                           operating_threshold=operating_threshold(ckpt.metadata),
                                           **box_merge_fields(ckpt.metadata))
        self.name = f"torch-{self.device.type}" + ("-fp16" if half else "") + ("-graph" if cuda_graph else "")
        self._graph = None
        if cuda_graph:
            self._capture()

    def _capture(self) -> None:
        torch = self._torch
        size = self.info.input_size
        self._static_in = torch.zeros((1, 3, size, size), device=self.device, dtype=self.dtype)
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side), torch.inference_mode():
            for _ in range(3):  # warm-up outside the graph (cuDNN picks its kernels here)
                self._forward(self._static_in)
        torch.cuda.current_stream().wait_stream(side)
        self._graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self._graph), torch.inference_mode():
            self._static_out = self._forward(self._static_in)

    def infer_device(self, tensor) -> object:
        """Run on a tensor already on the device (the GPU letterbox's); returns a device tensor."""
        torch = self._torch
        if self._graph is not None:
            self._static_in.copy_(tensor)
            self._graph.replay()
            return self._static_out
        with torch.inference_mode():
            return self._forward(tensor.to(self.dtype))

    def _forward(self, x):
        """The network in ``self.dtype``, the decode in float32."""
        return self.model.decoder([raw.float() for raw in self.model.forward_raw(x)])

    def infer(self, tensor: np.ndarray) -> np.ndarray:
        torch = self._torch
        return self.infer_device(torch.from_numpy(tensor).to(self.device)).float().cpu().numpy()

    def close(self) -> None:
        self.model = None
        self._graph = None
