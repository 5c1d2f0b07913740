"""Reference networks that say what a slimmed network should compute, built without slimming.

Each reference is a copy of the ORIGINAL network, full width, in which the removed
channels are switched off by editing weights and by hooks on consumers' inputs. None of
them uses the fold arithmetic of :mod:`training.pruning.slim` (``sum(W[:, c]) * a``): they
run the original convolutions on edited inputs, so a mistake in the fold shows up as a
difference instead of being reproduced. Only the index bookkeeping (which input channels
of a consumer come from which producer) is shared with slimming, through
:func:`training.pruning.graph.input_sources`.

- :func:`silenced_network`: every removed channel outputs exactly nothing (its convolution
  weights, BatchNorm scale, shift and running mean are zero). Slimming with ``fold="none"``
  equals it.
- :func:`weights_removed_network`: only the removed channels' convolution weights are
  zero, so each emits its BatchNorm constant and every consumer sees it (zero-padded, as
  always). This is what pruning actually does to the original function before any
  recalibration; no slim network equals it exactly when a 3x3 consumer has a removed input.
- :func:`fold_reference`: the network each ``fold`` mode computes exactly: removed channels
  emit their constant; folded 3x3 consumers pad them with the constant instead of zero;
  consumers left unfolded see zero instead.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
import torch.nn.functional as F

from models import YOLOv3
from models.layers import ConvUnit
from models.layout import conv_layout
from training.pruning.graph import input_sources, producer_group
from training.pruning.slim import folds_into


def removed_outputs(model: YOLOv3, keep_by_group: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Per prunable convolution: the output channels pruning removes."""
    out = {}
    for spec in conv_layout(model.config.spp):
        if spec.is_output:
            continue
        n = model.named_convs()[spec.name].conv.out_channels
        out[spec.name] = np.setdiff1d(np.arange(n), keep_by_group[spec.coupling])
    return out


def removed_inputs(model: YOLOv3, keep_by_group: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Per convolution: the input channels that come from removed producer channels."""
    convs = model.named_convs()
    widths = {name: c.conv.out_channels for name, c in convs.items()}
    result = {}
    for name, sources in input_sources(model.config.spp).items():
        removed, offset = [], 0
        for source in sources:
            group = producer_group(source.tensor)
            width = 3 if group is None else widths[_any_member(model, group)]
            for _ in range(source.repeat):
                if group is not None:
                    removed.append(offset + np.setdiff1d(np.arange(width), keep_by_group[group]))
                offset += width
        result[name] = np.concatenate(removed) if removed else np.zeros(0, np.int64)
    return result


def _any_member(model: YOLOv3, group: str) -> str:
    return next(s.name for s in conv_layout(model.config.spp) if not s.is_output and s.coupling == group)


def _zero_removed_weights(model: YOLOv3, keep_by_group: dict[str, np.ndarray], silence: bool) -> None:
    convs = model.named_convs()
    with torch.no_grad():
        for name, removed in removed_outputs(model, keep_by_group).items():
            idx = torch.as_tensor(removed, dtype=torch.long)
            conv = convs[name]
            conv.conv.weight[idx] = 0
            if silence:  # BatchNorm then maps 0 to exactly 0, and LeakyReLU keeps it
                conv.bn.weight[idx] = 0
                conv.bn.bias[idx] = 0
                conv.bn.running_mean[idx] = 0


def silenced_network(model: YOLOv3, keep_by_group: dict[str, np.ndarray]) -> YOLOv3:
    """The original network with every removed channel outputting exactly zero."""
    ref = copy.deepcopy(model).eval()
    _zero_removed_weights(ref, keep_by_group, silence=True)
    return ref


def weights_removed_network(model: YOLOv3, keep_by_group: dict[str, np.ndarray]) -> YOLOv3:
    """The original network with the removed channels' convolution weights set to zero."""
    ref = copy.deepcopy(model).eval()
    _zero_removed_weights(ref, keep_by_group, silence=False)
    return ref


def fold_reference(model: YOLOv3, keep_by_group: dict[str, np.ndarray], fold: str) -> YOLOv3:
    """The network that ``slim(model, keep_by_group, fold)`` computes, at full width."""
    ref = weights_removed_network(model, keep_by_group)
    inputs = removed_inputs(ref, keep_by_group)
    for name, conv in ref.named_convs().items():
        removed = torch.as_tensor(inputs[name], dtype=torch.long)
        if len(removed) == 0:
            continue
        if not folds_into(conv, fold):
            conv.register_forward_pre_hook(_zeroing_hook(removed))
        elif conv.conv.padding != (0, 0):
            _pad_removed_with_their_value(conv, removed)
    return ref


def _zeroing_hook(removed: torch.Tensor):
    def hook(_module: torch.nn.Module, args: tuple[torch.Tensor]) -> tuple[torch.Tensor]:
        x = args[0].clone()
        x[:, removed] = 0
        return (x,)
    return hook


def _pad_removed_with_their_value(conv: ConvUnit, removed: torch.Tensor) -> None:
    """Pad explicitly: kept channels with zeros (as before), removed ones with their own
    value, which is the same at every position (a constant; asserted)."""
    ph, pw = conv.conv.padding
    conv.conv.padding = (0, 0)

    def hook(_module: torch.nn.Module, args: tuple[torch.Tensor]) -> tuple[torch.Tensor]:
        x = args[0]
        values = x[:, removed, :1, :1]
        if not torch.equal(x[:, removed], values.expand_as(x[:, removed])):
            raise AssertionError("a removed channel is not constant over the feature map")
        padded = F.pad(x, (pw, pw, ph, ph))
        padded[:, removed] = values.expand(-1, -1, padded.shape[2], padded.shape[3])
        return (padded,)

    conv.register_forward_pre_hook(hook)
