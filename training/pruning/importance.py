"""Channel importance criteria: small callables, model (and data) in, scores out.

Every criterion returns ``{conv name: [out_channels] scores}`` for the prunable
convolutions; :mod:`training.pruning.plan` sums members of a coupling group. Higher means
more important.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch

from models import YOLOv3
from models.layers import ConvUnit

Scores = dict[str, np.ndarray]


class Importance(Protocol):
    name: str

    def __call__(self, model: YOLOv3) -> Scores: ...


def prunable_convs(model: YOLOv3) -> dict[str, ConvUnit]:
    return {name: conv for name, conv in model.named_convs().items() if not conv.is_output}


@dataclass
class L1Importance:
    """L1 norm of each output channel's weights (Li et al. 2017)."""

    name: str = "l1"

    def __call__(self, model: YOLOv3) -> Scores:
        return {n: c.conv.weight.detach().abs().sum(dim=(1, 2, 3)).cpu().numpy()
                for n, c in prunable_convs(model).items()}


@dataclass
class BNScaleImportance:
    """|BatchNorm gamma| (network slimming, Liu et al. 2017); best after sparsity training."""

    name: str = "bn"

    def __call__(self, model: YOLOv3) -> Scores:
        return {n: c.bn.weight.detach().abs().cpu().numpy() for n, c in prunable_convs(model).items()}


@dataclass
class RandomImportance:
    """The control: random scores from a seeded generator."""

    seed: int = 0
    name: str = "random"

    def __call__(self, model: YOLOv3) -> Scores:
        rng = np.random.default_rng(self.seed)
        return {n: rng.random(c.conv.out_channels) for n, c in prunable_convs(model).items()}


@dataclass
class TaylorImportance:
    """First-order Taylor expansion of the loss (Molchanov et al. 2017): the change in loss
    from removing a parameter is estimated by ``|w * dL/dw|``; a channel's score sums that
    over its convolution weights and its BatchNorm gamma and beta, accumulated over
    ``num_batches`` batches (one batch is noisy). Needs gradients: ``batch_loss`` runs a
    forward pass on a batch and returns the loss; it is called in training mode. The
    BatchNorm running statistics are restored afterwards: scoring must not change the model.
    """

    batches: Iterable
    batch_loss: Callable[[YOLOv3, object], torch.Tensor]
    num_batches: int = 32
    name: str = "taylor"

    def __call__(self, model: YOLOv3) -> Scores:
        return _accumulate_over_batches(model, self.batches, self.batch_loss, self.num_batches, _taylor_terms)


@dataclass
class TaylorGateImportance(TaylorImportance):
    """Taylor importance at the BatchNorm gate (Molchanov et al. 2019, "Importance
    estimation for neural network pruning"): per batch, ``(gamma * dL/dgamma + beta *
    dL/dbeta)^2`` per channel, summed over batches. This is the squared first-order change
    in loss when the channel's output is switched off, measured where BatchNorm hands it on.
    Why not the convolution weights: BatchNorm makes its input scale-invariant, so in
    training mode ``sum w * dL/dw`` over a channel is about zero whatever the channel is
    worth; the signed gate term keeps the information that ``|w * dL/dw|`` throws away.
    Same call contract as :class:`TaylorImportance`."""

    name: str = "taylor-gate"

    def __call__(self, model: YOLOv3) -> Scores:
        return _accumulate_over_batches(model, self.batches, self.batch_loss, self.num_batches, _gate_terms)


def _accumulate_over_batches(model: YOLOv3, batches: Iterable, batch_loss: Callable[[YOLOv3, object], torch.Tensor],
                             num_batches: int, terms: Callable[[ConvUnit], np.ndarray]) -> Scores:
    """Sum ``terms(conv)`` (after one backward pass each) over up to ``num_batches`` batches,
    in training mode, leaving the BatchNorm running statistics as they were."""
    convs = prunable_convs(model)
    totals = {n: np.zeros(c.conv.out_channels) for n, c in convs.items()}
    was_training = model.training
    buffers = {k: v.clone() for k, v in model.state_dict().items() if "running" in k or "num_batches" in k}
    model.train()
    count = 0
    try:
        for batch in batches:
            if count >= num_batches:
                break
            model.zero_grad(set_to_none=True)
            batch_loss(model, batch).backward()
            for n, c in convs.items():
                totals[n] += terms(c)
            count += 1
    finally:
        model.zero_grad(set_to_none=True)
        model.load_state_dict(buffers, strict=False)
        model.train(was_training)
    if count == 0:
        raise ValueError("Taylor importance needs at least one batch of data")
    return totals


def _taylor_terms(conv: ConvUnit) -> np.ndarray:
    w = conv.conv.weight
    per_channel = (w * w.grad).abs().sum(dim=(1, 2, 3))
    per_channel = per_channel + (conv.bn.weight * conv.bn.weight.grad).abs() + (conv.bn.bias * conv.bn.bias.grad).abs()
    return per_channel.detach().cpu().double().numpy()


def _gate_terms(conv: ConvUnit) -> np.ndarray:
    bn = conv.bn
    gate = bn.weight * bn.weight.grad + bn.bias * bn.bias.grad
    return (gate.detach().cpu().double() ** 2).numpy()


CRITERIA = ("taylor", "taylor-gate", "random", "l1", "bn")
