"""YOLOv3 (Redmon & Farhadi 2018): Darknet-53 backbone, three-scale head, optional SPP.

Every layer width comes from :class:`models.config.YoloConfig`, so the same code builds
the published network, a width-scaled one and a physically pruned one.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from models.config import YoloConfig, check_input_size
from models.decode import YoloDecoder
from models.layers import ConvUnit, ResidualBlock, SpatialPyramidPooling
from models.layout import (
    ANCHORS_PER_SCALE,
    HEAD_STRIDES,
    ROUTED_STAGES,
    STAGE_DEPTHS,
    conv_layout,
    head_conv_names,
)


class Darknet53(nn.Module):
    """The 52-convolution backbone; returns the stride 8, 16 and 32 feature maps."""

    def __init__(self, channels: dict[str, int], in_channels: int = 3) -> None:
        super().__init__()
        self.stem = ConvUnit("stem", in_channels, channels["stem"], 3)
        c_prev = channels["stem"]
        stages = []
        for i, depth in enumerate(STAGE_DEPTHS, start=1):
            c_stage = channels[f"s{i}.down"]
            layers: list[nn.Module] = [ConvUnit(f"s{i}.down", c_prev, c_stage, 3, 2)]
            for j in range(depth):
                hidden = channels[f"s{i}.b{j}.reduce"]
                layers.append(ResidualBlock(
                    ConvUnit(f"s{i}.b{j}.reduce", c_stage, hidden, 1),
                    ConvUnit(f"s{i}.b{j}.expand", hidden, c_stage, 3),
                ))
            stages.append(nn.Sequential(*layers))
            c_prev = c_stage
        self.stages = nn.ModuleList(stages)
        #: (channels, stride) of each returned map, stride 8 first.
        self.feature_info = [(channels[f"s{i}.down"], 2 ** i) for i in (3, 4, 5)]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.stem(x)
        features = []
        for i, stage in enumerate(self.stages, start=1):
            x = stage(x)
            if i >= 3:
                features.append(x)
        return features


class DetectionHead(nn.Module):
    """One scale of the head: alternating 1x1/3x3 convolutions (with SPP after the third
    on the SPP variant), then a 3x3 and the output 1x1.

    ``forward`` returns the route feature (input of the lateral branch) and the raw map.
    """

    def __init__(
        self, k: int, c_in: int, channels: dict[str, int], outputs: int, spp: bool
    ) -> None:
        super().__init__()
        names = head_conv_names(k, spp)
        kernels = {spec.name: spec.kernel for spec in conv_layout(spp)}
        has_spp = spp and k == 0  # YOLOv3-SPP pools in the stride-32 head only
        self.spp_after = 2 if has_spp else None
        self.spp = SpatialPyramidPooling() if has_spp else None
        convs = []
        c_prev = c_in
        for m, name in enumerate(names):
            convs.append(ConvUnit(name, c_prev, channels[name], kernels[name]))
            c_prev = channels[name]
            if m == self.spp_after:
                c_prev *= SpatialPyramidPooling.channel_factor()
        self.convs = nn.ModuleList(convs)
        self.pre = ConvUnit(f"h{k}.pre", c_prev, channels[f"h{k}.pre"], 3)
        self.out = ConvUnit(f"h{k}.out", channels[f"h{k}.pre"], outputs, 1, output=True)
        self.route_channels = c_prev

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        for m, conv in enumerate(self.convs):
            x = conv(x)
            if m == self.spp_after:
                x = self.spp(x)
        return x, self.out(self.pre(x))


class YOLOv3(nn.Module):
    """YOLOv3 with per-layer widths from a :class:`YoloConfig`.

    Input: ``[B, 3, S, S]`` RGB in [0, 1], ``S`` a multiple of 32.
    Training mode returns the three raw maps ``[B, 3*(5+C), S/s, S/s]`` for strides
    8, 16, 32. Eval mode returns decoded predictions ``[B, N, 5+C]`` (see
    :class:`models.decode.YoloDecoder`), the tensor exported to ONNX.
    """

    def __init__(self, config: YoloConfig) -> None:
        super().__init__()
        self.config = config
        ch = dict(config.channels)
        outputs = ANCHORS_PER_SCALE * config.outputs_per_anchor
        self.backbone = Darknet53(ch)
        routed = {i: ch[f"s{i}.down"] for i in (3, 4, 5)}
        heads, laterals = [], []
        c_in = routed[5]
        for k in range(len(HEAD_STRIDES)):
            head = DetectionHead(k, c_in, ch, outputs, config.spp)
            heads.append(head)
            if k < len(HEAD_STRIDES) - 1:
                lateral = ConvUnit(f"h{k}.lateral", head.route_channels, ch[f"h{k}.lateral"], 1)
                laterals.append(lateral)
                # Darknet's route order: the upsampled lateral first, then the backbone map.
                c_in = ch[f"h{k}.lateral"] + routed[ROUTED_STAGES[k]]
        self.heads = nn.ModuleList(heads)
        self.laterals = nn.ModuleList(laterals)
        strides_small_first = tuple(sorted(HEAD_STRIDES))
        self.decoder = YoloDecoder(config.anchors, strides_small_first, config.new_coords)

    @property
    def strides(self) -> tuple[int, ...]:
        return self.decoder.strides

    def named_convs(self) -> dict[str, ConvUnit]:
        """Every convolution by its layout name, in Darknet's layer order."""
        found = {m.spec_name: m for m in self.modules() if isinstance(m, ConvUnit)}
        return {spec.name: found[spec.name] for spec in conv_layout(self.config.spp)}

    def forward_raw(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Raw head maps, stride 8 first."""
        self._check_input(x)
        s3, s4, s5 = self.backbone(x)
        skips = {3: s3, 4: s4}
        raw_by_head = []
        feature = s5
        for k, head in enumerate(self.heads):
            route, raw = head(feature)
            raw_by_head.append(raw)
            if k < len(self.laterals):
                skip = skips[ROUTED_STAGES[k]]
                up = F.interpolate(self.laterals[k](route), scale_factor=2.0, mode="nearest")
                feature = torch.cat((up, skip), dim=1)
        return raw_by_head[::-1]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor] | torch.Tensor:
        raw = self.forward_raw(x)
        if self.training:
            return raw
        return self.decoder(raw)

    def _check_input(self, x: torch.Tensor) -> None:
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"expected input [B, 3, H, W], got {tuple(x.shape)}")
        if torch.jit.is_tracing():  # ONNX export traces with a valid, fixed size
            return
        for side in x.shape[2:]:
            check_input_size(int(side))


def with_input_size(model: YOLOv3, size: int) -> YOLOv3:
    """The same weights run at another input size. The network is fully convolutional, so
    only the size its config records changes (export bakes it into the ONNX, the app
    letterboxes to it): a network trained at 320 may do better a little larger
    (``docs/accuracy.md``, "The shipped networks at 352 px")."""
    resized = YOLOv3(model.config.replace(input_size=check_input_size(size)))
    resized.load_state_dict(model.state_dict())
    return resized.train(model.training)
