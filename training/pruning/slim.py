"""Physical slimming: build a smaller YOLOv3 that keeps only the chosen channels.

A removed channel is not silent: with its weights gone its convolution outputs zero,
BatchNorm turns that into the constant shift ``beta - gamma * mean / sqrt(var + eps)``
and LeakyReLU passes a constant ``a`` on to every consumer. Slimming can fold that
constant into each consumer: ``sum(W[:, c]) * a`` is subtracted from the consumer's
BatchNorm running mean (or added to the bias of an output convolution). Constants are
carried through residual additions (they sum), the SPP block (max-pooling a constant gives
the constant) and the upsample routes.

The fold is exact for 1x1 consumers only. A 3x3 consumer zero-pads its input, so at the
border of the feature map some of its taps see padding, not the constant; the fold gives
them the constant anyway. Hence three ``fold`` modes (:data:`FOLD_MODES`): ``all``
(every consumer; exact in the interior, approximate on the border ring of each 3x3
consumer), ``pointwise`` (1x1 consumers and the output convolutions only: exact where
applied) and ``none`` (removed channels simply vanish). Each mode is checked against a
reference built without the fold arithmetic, in :mod:`training.pruning.reference`; the
measured effect of each on a trained model is in ``docs/pruning.md``.
"""

from __future__ import annotations

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


FOLD_MODES = ("all", "pointwise", "none")


def folds_into(conv: ConvUnit, fold: str) -> bool:
    """Whether ``fold`` mode folds removed inputs' constants into this consumer."""
    if fold not in FOLD_MODES:
        raise ValueError(f"unknown fold mode {fold!r}; choose one of {', '.join(FOLD_MODES)}")
    return fold == "all" or (fold == "pointwise" and tuple(conv.conv.kernel_size) == (1, 1))


def folded_shift(conv: ConvUnit, inputs: ChannelState, fold: str = "all") -> torch.Tensor:
    """What the removed input channels' constants add to each output channel (pre-BN);
    zero where ``fold`` mode leaves this consumer alone."""
    removed = torch.as_tensor(inputs.removed, dtype=torch.long)
    if len(removed) == 0 or not folds_into(conv, fold):
        return torch.zeros(conv.conv.out_channels)
    w = conv.conv.weight.detach()[:, removed].sum(dim=(2, 3))  # [out, removed]
    return w @ inputs.const[removed]


def slim(model: YOLOv3, keep_by_group: dict[str, np.ndarray], fold: str = "all") -> YOLOv3:
    """A new, physically smaller network keeping ``keep_by_group[group]`` channels, with
    removed channels' constants folded into consumers as ``fold`` says (module docstring)."""
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
            shift = folded_shift(conv, inputs[name], fold)
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
