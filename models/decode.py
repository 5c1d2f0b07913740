"""Turning raw YOLOv3 head maps into boxes, kept inside the network so ONNX carries it."""

from __future__ import annotations

import torch
from torch import nn

#: Layout of the last axis of decoded predictions: x1, y1, x2, y2, objectness, class scores.
BOX_SLICE = slice(0, 4)
OBJECTNESS_INDEX = 4
FIRST_CLASS_INDEX = 5


def split_anchor_axis(raw: torch.Tensor, num_anchors: int) -> torch.Tensor:
    """``[B, A*(5+C), H, W]`` -> ``[B, A, H, W, 5+C]`` (the per-anchor view the loss and
    decoder both use)."""
    b, channels, h, w = raw.shape
    return raw.view(b, num_anchors, channels // num_anchors, h, w).permute(0, 1, 3, 4, 2)


#: Clamp on the exponent of the classic size decode, so a wild early prediction in
#: training cannot overflow (exp(4) = 55x the anchor, far beyond any real box).
MAX_LOG_SCALE = 4.0


def box_centre_size(t: torch.Tensor, grid: torch.Tensor, stride: int, anchors: torch.Tensor,
                    new_coords: bool, clamp: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Centre and size in input pixels from raw ``t[..., :4]``; the one place the box
    maths lives (the decoder and the loss both call it)."""
    if new_coords:
        s = t.sigmoid()
        return (s[..., 0:2] * 2 - 0.5 + grid) * stride, (s[..., 2:4] * 2) ** 2 * anchors
    log_size = t[..., 2:4].clamp(max=MAX_LOG_SCALE) if clamp else t[..., 2:4]
    return (t[..., 0:2].sigmoid() + grid) * stride, log_size.exp() * anchors


class YoloDecoder(nn.Module):
    """Decodes the three raw maps into one ``[B, N, 5 + C]`` tensor.

    Each row is ``x1, y1, x2, y2`` in input pixels, objectness and per-class scores (all
    sigmoid probabilities); rows are ordered stride 8 first, then anchor, row, column.
    The decode is Darknet's: centre ``(sigmoid(t) + cell) * stride`` and size
    ``anchor * exp(t)``, so imported Darknet weights give Darknet's boxes; with
    ``new_coords`` it is Darknet's ``new_coords=1`` variant (see ``YoloConfig``).
    """

    def __init__(self, anchors: tuple[tuple[float, float], ...], strides: tuple[int, ...],
                 new_coords: bool = False) -> None:
        super().__init__()
        self.strides = tuple(strides)
        self.new_coords = new_coords
        per_scale = len(anchors) // len(strides)
        grouped = torch.tensor(anchors, dtype=torch.float32).view(len(strides), per_scale, 2)
        self.register_buffer("anchors", grouped, persistent=False)

    def forward(self, maps: list[torch.Tensor]) -> torch.Tensor:
        return torch.cat(
            [self.decode_scale(m, i) for i, m in enumerate(maps)], dim=1
        )

    def decode_scale(self, raw: torch.Tensor, index: int) -> torch.Tensor:
        anchors = self.anchors[index]
        stride = self.strides[index]
        p = split_anchor_axis(raw, anchors.shape[0])
        b, a, h, w, _ = p.shape
        ys = torch.arange(h, device=raw.device, dtype=raw.dtype)
        xs = torch.arange(w, device=raw.device, dtype=raw.dtype)
        grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
        grid = torch.stack((grid_x, grid_y), dim=-1).view(1, 1, h, w, 2)
        centre, size = box_centre_size(p[..., 0:4], grid, stride, anchors.to(raw.dtype).view(1, a, 1, 1, 2),
                                       self.new_coords)
        half = size / 2
        boxes = torch.cat((centre - half, centre + half), dim=-1)
        scores = p[..., 4:].sigmoid()
        return torch.cat((boxes, scores), dim=-1).reshape(b, a * h * w, -1)
