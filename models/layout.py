"""The convolution layout of YOLOv3 (and YOLOv3-SPP), in Darknet's layer order.

This list is the single source of truth for three things that must agree exactly:
the modules the network builds, the byte order of a Darknet ``.weights`` file, and the
names under which a pruned network records its per-layer widths. Every convolution gets
a stable dotted name:

- ``stem`` -- the first 3x3 convolution (32 channels at width 1.0);
- ``s{i}.down`` -- the stride-2 3x3 convolution opening backbone stage ``i`` (1..5);
- ``s{i}.b{j}.reduce`` / ``s{i}.b{j}.expand`` -- the 1x1 and 3x3 convolutions of residual
  block ``j`` of stage ``i``. Every ``expand`` adds onto the stage's running tensor, so all
  of them share their output channels with ``s{i}.down``: they form the coupling group
  ``s{i}`` and must always have the same width;
- ``h{k}.c0`` .. ``h{k}.c4`` -- the alternating 1x1/3x3 convolutions of detection head
  ``k`` (k=0 is stride 32, 1 is stride 16, 2 is stride 8); with SPP, head 0 gets the
  extra ``h0.c5`` 1x1 after the pooling block (Darknet's yolov3-spp.cfg order);
- ``h{k}.pre`` -- the 3x3 convolution before the output;
- ``h{k}.out`` -- the 1x1 output convolution with bias and no BatchNorm. Its width is
  fixed by anchors and classes: it is never pruned and is not listed in a config;
- ``h{k}.lateral`` -- the 1x1 convolution that feeds the upsample route into head k+1.
"""

from __future__ import annotations

from dataclasses import dataclass

#: Darknet-53 residual blocks per stage and the stage widths at width 1.0.
STAGE_DEPTHS: tuple[int, ...] = (1, 2, 8, 8, 4)
STAGE_CHANNELS: tuple[int, ...] = (64, 128, 256, 512, 1024)
STEM_CHANNELS = 32
#: Base width of each detection head at width 1.0 (stride 32, 16, 8).
HEAD_CHANNELS: tuple[int, ...] = (512, 256, 128)
#: Output strides of the three heads in head order (k = 0, 1, 2).
HEAD_STRIDES: tuple[int, ...] = (32, 16, 8)
#: Backbone stages whose outputs are routed into heads 1 and 2 (Darknet layers 61 and 36).
ROUTED_STAGES: tuple[int, ...] = (4, 3)
#: Max-pool kernel sizes of the SPP block, in the order their outputs are concatenated
#: (Darknet's ``[route] layers=-1,-3,-5,-6`` puts the largest pool first, input last).
SPP_KERNELS: tuple[int, ...] = (13, 9, 5)
ANCHORS_PER_SCALE = 3


@dataclass(frozen=True)
class ConvSpec:
    """One convolution of the network.

    ``full_channels`` is the width at multiplier 1.0 (``None`` for output convolutions,
    whose width depends on the class count). ``group`` names the coupling group whose
    members must share their output width (``None`` when the layer is free).
    """

    name: str
    kernel: int
    stride: int
    full_channels: int | None
    group: str | None = None

    @property
    def is_output(self) -> bool:
        return self.full_channels is None

    @property
    def coupling(self) -> str:
        """The key under which pruning decides this layer's channels together."""
        return self.group or self.name


def _backbone_layout() -> list[ConvSpec]:
    specs = [ConvSpec("stem", 3, 1, STEM_CHANNELS)]
    for i, (depth, width) in enumerate(zip(STAGE_DEPTHS, STAGE_CHANNELS), start=1):
        group = f"s{i}"
        specs.append(ConvSpec(f"s{i}.down", 3, 2, width, group))
        for j in range(depth):
            specs.append(ConvSpec(f"s{i}.b{j}.reduce", 1, 1, width // 2))
            specs.append(ConvSpec(f"s{i}.b{j}.expand", 3, 1, width, group))
    return specs


def head_conv_names(k: int, spp: bool) -> list[str]:
    """Names of the alternating 1x1/3x3 convolutions of head ``k`` before ``pre``."""
    count = 6 if (spp and k == 0) else 5
    return [f"h{k}.c{m}" for m in range(count)]


def _head_kernel(k: int, m: int, spp: bool) -> int:
    """1x1 on even positions, 3x3 on odd; with SPP the block restarts after ``c2``."""
    if spp and k == 0 and m >= 3:
        m -= 3
    return 1 if m % 2 == 0 else 3


def _head_layout(spp: bool) -> list[ConvSpec]:
    specs: list[ConvSpec] = []
    for k, base in enumerate(HEAD_CHANNELS):
        for m, name in enumerate(head_conv_names(k, spp)):
            kernel = _head_kernel(k, m, spp)
            specs.append(ConvSpec(name, kernel, 1, base if kernel == 1 else 2 * base))
        specs.append(ConvSpec(f"h{k}.pre", 3, 1, 2 * base))
        specs.append(ConvSpec(f"h{k}.out", 1, 1, None))
        if k < len(HEAD_CHANNELS) - 1:
            specs.append(ConvSpec(f"h{k}.lateral", 1, 1, base // 2))
    return specs


def conv_layout(spp: bool) -> tuple[ConvSpec, ...]:
    """All convolutions in Darknet's layer order (75 for YOLOv3, 76 for YOLOv3-SPP)."""
    return tuple(_backbone_layout() + _head_layout(spp))


def prunable_layout(spp: bool) -> tuple[ConvSpec, ...]:
    """The convolutions whose output width a config records (all but the outputs)."""
    return tuple(spec for spec in conv_layout(spp) if not spec.is_output)
