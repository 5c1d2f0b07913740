"""Frame -> network input: letterbox, BGR->RGB, scale to [0, 1], NCHW. Shared by every backend.

The letterbox matches training exactly (longer side scaled to the input size with area
interpolation when shrinking, grey padding centred), so the network sees at run time what
it saw in training. Buffers are allocated once per frame geometry and reused.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

DEFAULT_LETTERBOX_COLOUR = (114, 114, 114)


@dataclass(frozen=True)
class Letterbox:
    """Where a frame sits inside the square input: ``input = frame * scale + (left, top)``."""

    scale: float
    left: int
    top: int
    width: int   # resized frame width inside the input
    height: int  # resized frame height inside the input
    frame_width: int
    frame_height: int

    @classmethod
    def fit(cls, frame_height: int, frame_width: int, size: int) -> Letterbox:
        scale = min(size / frame_height, size / frame_width)
        w, h = round(frame_width * scale), round(frame_height * scale)
        return cls(scale, (size - w) // 2, (size - h) // 2, w, h, frame_width, frame_height)

    def to_frame(self, boxes: np.ndarray) -> np.ndarray:
        """Input-pixel xyxy boxes -> frame pixels, clipped to the frame."""
        out = boxes.astype(np.float32, copy=True)
        out[:, [0, 2]] = ((out[:, [0, 2]] - self.left) * (self.frame_width / self.width)).clip(0, self.frame_width)
        out[:, [1, 3]] = ((out[:, [1, 3]] - self.top) * (self.frame_height / self.height)).clip(0, self.frame_height)
        return out


class Preprocessor:
    """Turns BGR uint8 frames into ``[1, 3, S, S]`` float32 RGB inputs in [0, 1]."""

    def __init__(self, size: int, colour: tuple[int, int, int] = DEFAULT_LETTERBOX_COLOUR) -> None:
        self.size = size
        self.colour = tuple(int(c) for c in colour)
        self.canvas = np.empty((size, size, 3), np.uint8)
        self.tensor = np.empty((1, 3, size, size), np.float32)
        self._geometry: Letterbox | None = None
        self._resized: np.ndarray | None = None

    def __call__(self, frame: np.ndarray) -> tuple[np.ndarray, Letterbox]:
        """Returns the input tensor (a buffer reused by the next call) and the geometry."""
        if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
            raise ValueError(f"expected an HxWx3 uint8 BGR frame, got {frame.dtype} {frame.shape}")
        h, w = frame.shape[:2]
        box = self._geometry
        if box is None or (box.frame_height, box.frame_width) != (h, w):
            box = Letterbox.fit(h, w, self.size)
            self._geometry = box
            self.canvas[:] = self.colour
            self._resized = np.empty((box.height, box.width, 3), np.uint8)
        if (box.width, box.height) == (w, h):
            self._resized[:] = frame
        else:
            interpolation = cv2.INTER_AREA if box.scale < 1 else cv2.INTER_LINEAR
            cv2.resize(frame, (box.width, box.height), dst=self._resized, interpolation=interpolation)
        self.canvas[box.top:box.top + box.height, box.left:box.left + box.width] = self._resized
        np.multiply(self.canvas[:, :, ::-1].transpose(2, 0, 1), np.float32(1 / 255), out=self.tensor[0])
        return self.tensor, box
