"""Physical slimming: build a smaller YOLOv3 that keeps only the chosen channels.

A removed channel is not silent: with its weights gone its convolution outputs zero,
BatchNorm turns that into the constant shift ``beta - gamma * mean / sqrt(var + eps)``
and LeakyReLU passes a constant ``a`` on to every consumer. Slimming folds that constant
into each consumer: its contribution ``sum(W[:, c]) * a`` is subtracted from the
consumer's BatchNorm running mean (or added to the bias of an output convolution). So the
slim network equals the original with those channels' activations zeroed and their
constants kept as biases -- exactly, not approximately (:func:`masked_reference` builds
that network for the tests). Constants are carried through residual additions (they sum),
the SPP block (max-pooling a constant gives the constant) and the upsample routes.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from models import YOLOv3
from models.layers import LEAKY_SLOPE, ConvUnit
from models.layout import conv_layout
from training.pruning.graph import IMAGE, input_sources, stage_tensor


@dataclass
class ChannelState:
    """Which channels of a feature map survive, and the constant each removed one carries."""

    keep: np.ndarray      # sorted indices into the full channel list
    const: torch.Tensor   # [full channels]; zero at kept positions

    @property
    def removed(self) -> np.ndarray:
        mask = np.ones(len(self.const), bool)
        mask[self.keep] = False
        return np.flatnonzero(mask)


def removed_constant(conv: ConvUnit) -> torch.Tensor:
    """Per output channel: the activation the channel emits once its weights are gone."""
    bn = conv.bn
    shift = bn.bias - bn.weight * bn.running_mean / torch.sqrt(bn.running_var + bn.eps)
    return F.leaky_relu(shift.detach(), LEAKY_SLOPE)


def _concat(states: list[tuple[ChannelState, int]]) -> ChannelState:
    keeps, consts, offset = [], [], 0
    for state, repeat in states:
        n = len(state.const)
        for _ in range(repeat):
            keeps.append(state.keep + offset)
            consts.append(state.const)
            offset += n
    return ChannelState(np.concatenate(keeps), torch.cat(consts))


def _output_state(conv: ConvUnit, keep: np.ndarray) -> ChannelState:
    n = conv.conv.out_channels
    if conv.is_output:
        return ChannelState(np.arange(n), torch.zeros(n))
    const = removed_constant(conv).clone()
    const[torch.as_tensor(keep, dtype=torch.long)] = 0
    return ChannelState(np.asarray(keep), const)


def propagate(model: YOLOv3, keep_by_group: dict[str, np.ndarray]) -> tuple[dict[str, ChannelState], dict[str, ChannelState]]:
    """Channel states of every tensor, and the input state of every convolution."""
    convs = model.named_convs()
    sources = input_sources(model.config.spp)
    tensors: dict[str, ChannelState] = {IMAGE: ChannelState(np.arange(3), torch.zeros(3))}
    inputs: dict[str, ChannelState] = {}
    for spec in conv_layout(model.config.spp):
        conv = convs[spec.name]
        inputs[spec.name] = _concat([(tensors[s.tensor], s.repeat) for s in sources[spec.name]])
        keep = np.arange(conv.conv.out_channels) if spec.is_output else keep_by_group[spec.coupling]
        tensors[spec.name] = _output_state(conv, keep)
        _update_stage_tensors(spec.name, tensors)
    return tensors, inputs


def _update_stage_tensors(name: str, tensors: dict[str, ChannelState]) -> None:
    """Stage tensors: ``s{i}@0`` is the down-sampling output; each block adds its expand."""
    parts = name.split(".")
    if parts[0].startswith("s") and parts[0][1:].isdigit():
        stage = int(parts[0][1:])
        if parts[1] == "down":
            tensors[stage_tensor(stage, 0)] = tensors[name]
        elif parts[-1] == "expand":
            j = int(parts[1][1:])
            before, added = tensors[stage_tensor(stage, j)], tensors[name]
            tensors[stage_tensor(stage, j + 1)] = ChannelState(before.keep, before.const + added.const)


def folded_shift(conv: ConvUnit, inputs: ChannelState) -> torch.Tensor:
    """What the removed input channels' constants add to each output channel (pre-BN)."""
    removed = torch.as_tensor(inputs.removed, dtype=torch.long)
    if len(removed) == 0:
        return torch.zeros(conv.conv.out_channels)
    w = conv.conv.weight.detach()[:, removed].sum(dim=(2, 3))  # [out, removed]
    return w @ inputs.const[removed]


def slim(model: YOLOv3, keep_by_group: dict[str, np.ndarray]) -> YOLOv3:
    """A new, physically smaller network keeping ``keep_by_group[group]`` channels."""
    model = model.eval()
    tensors, inputs = propagate(model, keep_by_group)
    widths = {spec.name: len(keep_by_group[spec.coupling])
              for spec in conv_layout(model.config.spp) if not spec.is_output}
    small = YOLOv3(model.config.replace(channels=widths)).eval()
    old, new = model.named_convs(), small.named_convs()
    with torch.no_grad():
        for name, conv in old.items():
            out_keep = torch.as_tensor(tensors[name].keep, dtype=torch.long)
            in_keep = torch.as_tensor(inputs[name].keep, dtype=torch.long)
            shift = folded_shift(conv, inputs[name])
            target = new[name]
            target.conv.weight.copy_(conv.conv.weight[out_keep][:, in_keep])
            if conv.is_output:
                target.conv.bias.copy_(conv.conv.bias[out_keep] + shift[out_keep])
                continue
            target.bn.weight.copy_(conv.bn.weight[out_keep])
            target.bn.bias.copy_(conv.bn.bias[out_keep])
            target.bn.running_mean.copy_(conv.bn.running_mean[out_keep] - shift[out_keep])
            target.bn.running_var.copy_(conv.bn.running_var[out_keep])
    return small


def masked_reference(model: YOLOv3, keep_by_group: dict[str, np.ndarray]) -> YOLOv3:
    """The original network with removed channels' activations zeroed and their constants
    folded into consumers (the network :func:`slim` must reproduce exactly). For tests
    and analysis; it is as slow as the original."""
    ref = copy.deepcopy(model).eval()
    tensors, inputs = propagate(ref, keep_by_group)
    for name, conv in ref.named_convs().items():
        shift = folded_shift(conv, inputs[name])
        with torch.no_grad():
            if conv.is_output:
                conv.conv.bias.add_(shift)
                continue
            conv.bn.running_mean.sub_(shift)
        mask = torch.zeros(conv.conv.out_channels)
        mask[torch.as_tensor(tensors[name].keep, dtype=torch.long)] = 1
        conv.register_forward_hook(lambda _m, _i, out, mask=mask: out * mask.view(1, -1, 1, 1).to(out))
    return ref
