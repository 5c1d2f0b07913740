"""The letterbox on the GPU, from the uint8 frame: for the GPU path of ``engine.benchmarks.gpu``.

On a GPU machine the CPU letterbox (3 ms for a 1280x1024 frame on two cores) costs as much
as the network. Here the uint8 frame is uploaded as it is (a quarter of the bytes of a
float frame), and the channel swap, area/bilinear resize, grey padding and scaling to
[0, 1] run on the device, writing into one preallocated input tensor. The geometry is
:class:`engine.preprocess.Letterbox`'s, so boxes map back exactly as on the CPU path; the
pixels differ from OpenCV's by resampling details (measured in the tests, a few grey levels).
Needs torch; runs on the CPU too (which is how it is tested here).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from engine.preprocess import DEFAULT_LETTERBOX_COLOUR, Letterbox


class GpuLetterbox:
    """``frame (H, W, 3) uint8 BGR -> ([1, 3, S, S] float tensor on device, Letterbox)``."""

    def __init__(self, size: int, colour: tuple[int, int, int] = DEFAULT_LETTERBOX_COLOUR, device: str = "cuda",
                 dtype: Any = None) -> None:
        import torch

        self.torch = torch
        self.size = size
        self.device = torch.device(device)
        self.dtype = dtype or torch.float32
        rgb = torch.tensor(colour[::-1], dtype=torch.float32) / 255.0  # the colour is BGR, like OpenCV's
        self.canvas = rgb.view(1, 3, 1, 1).expand(1, 3, size, size).contiguous().to(self.device, self.dtype)
        self.fill = self.canvas.clone()
        self._staging: Any = None
        self._uploaded: Any = None  # a CUDA event after the last upload

    def __call__(self, frame: np.ndarray) -> tuple[Any, Letterbox]:
        torch = self.torch
        import torch.nn.functional as F

        h, w = frame.shape[:2]
        box = Letterbox.fit(h, w, self.size)
        host = torch.from_numpy(np.ascontiguousarray(frame))
        if self.device.type == "cuda":
            if self._uploaded is not None:
                self._uploaded.synchronize()  # the last non-blocking upload has left the staging buffer
            if self._staging is None or self._staging.shape != host.shape:
                self._staging = torch.empty(host.shape, dtype=torch.uint8, pin_memory=True)
            self._staging.copy_(host)
            host = self._staging
        image = host.to(self.device, non_blocking=True)
        if self.device.type == "cuda":
            self._uploaded = torch.cuda.Event()
            self._uploaded.record()
        image = image.permute(2, 0, 1).flip(0).unsqueeze(0)  # BGR -> RGB, NCHW
        image = image.to(self.dtype) / 255.0
        mode = "area" if box.scale < 1 else "bilinear"
        resized = F.interpolate(image, size=(box.height, box.width), mode=mode,
                                **({} if mode == "area" else {"align_corners": False}))
        self.canvas.copy_(self.fill)
        self.canvas[:, :, box.top:box.top + box.height, box.left:box.left + box.width] = resized
        return self.canvas, box
