"""PyTorch backend for development: runs a ``.safetensors`` checkpoint directly.

Like the exporter, it is the only part of the engine that touches torch and ``models``,
and only when chosen; the clinic runtime never imports it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from engine.backends.base import BackendUnavailable
from engine.export_metadata import model_info_from_config, operating_threshold
from engine.model_info import sha256_file


class TorchBackend:
    def __init__(self, path: str | Path, device: str = "cpu", threads: int = 0) -> None:
        try:
            import torch
        except ImportError:
            raise BackendUnavailable("torch is not installed (install the 'train' extra)") from None
        from models import load_checkpoint

        if threads:
            torch.set_num_threads(threads)
        self._torch = torch
        self.device = torch.device(device)
        ckpt = load_checkpoint(path, device=self.device)
        self.model = ckpt.model.eval()
        self.info = model_info_from_config(ckpt.config, sha256_file(path),
                                           operating_threshold=operating_threshold(ckpt.metadata))
        self.name = f"torch-{self.device.type}"

    def infer(self, tensor: np.ndarray) -> np.ndarray:
        torch = self._torch
        with torch.inference_mode():
            out = self.model(torch.from_numpy(tensor).to(self.device))
        return out.float().cpu().numpy()

    def close(self) -> None:
        self.model = None
