"""Building blocks of Darknet-53 and the YOLOv3 head."""

from __future__ import annotations

import torch
from torch import nn

from models.layout import SPP_KERNELS

LEAKY_SLOPE = 0.1
#: Darknet's BatchNorm epsilon; keeping it makes imported .weights reproduce Darknet.
BN_EPS = 1e-5


class ConvUnit(nn.Module):
    """Convolution + BatchNorm + LeakyReLU(0.1), or a plain biased convolution for outputs.

    ``spec_name`` is the layer's name in :mod:`models.layout`; pruning and the Darknet
    weights reader find layers by it.
    """

    def __init__(
        self, spec_name: str, c_in: int, c_out: int, kernel: int, stride: int = 1,
        *, output: bool = False,
    ) -> None:
        super().__init__()
        self.spec_name = spec_name
        self.conv = nn.Conv2d(c_in, c_out, kernel, stride, kernel // 2, bias=output)
        self.bn = None if output else nn.BatchNorm2d(c_out, eps=BN_EPS, momentum=0.03)
        self.act = None if output else nn.LeakyReLU(LEAKY_SLOPE, inplace=True)

    @property
    def is_output(self) -> bool:
        return self.bn is None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        if self.bn is not None:
            x = self.act(self.bn(x))
        return x


class ResidualBlock(nn.Module):
    """Darknet residual: ``x + expand(reduce(x))`` (1x1 then 3x3)."""

    def __init__(self, reduce: ConvUnit, expand: ConvUnit) -> None:
        super().__init__()
        self.reduce = reduce
        self.expand = expand

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.expand(self.reduce(x))


class SpatialPyramidPooling(nn.Module):
    """YOLOv3-SPP block: stride-1 max pools concatenated with the input, largest first."""

    def __init__(self, kernels: tuple[int, ...] = SPP_KERNELS) -> None:
        super().__init__()
        self.pools = nn.ModuleList(nn.MaxPool2d(k, 1, k // 2) for k in kernels)

    @staticmethod
    def channel_factor(kernels: tuple[int, ...] = SPP_KERNELS) -> int:
        return len(kernels) + 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([pool(x) for pool in self.pools] + [x], dim=1)
