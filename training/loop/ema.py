"""Exponential moving average of model weights (Polyak averaging), as in YOLOv5/v8.

The average is what gets validated and shipped: on small data sets it is markedly more
accurate and stable than the raw weights of the last step.
"""

from __future__ import annotations

import copy
import math

import torch
from torch import nn


class ModelEMA:
    """``decay`` ramps up from 0 with time constant ``tau`` updates, so early averages
    are not dominated by the random initialisation."""

    def __init__(self, model: nn.Module, decay: float = 0.9999, tau: float = 2000.0, updates: int = 0) -> None:
        if not 0.0 <= decay < 1.0 or not tau > 0:
            raise ValueError(f"EMA decay must be in [0, 1) and its time constant above 0 (got {decay}, {tau})")
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)
        self.decay = decay
        self.tau = tau
        self.updates = updates

    def current_decay(self) -> float:
        return self.decay * (1 - math.exp(-self.updates / self.tau))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        d = self.current_decay()
        source = model.state_dict()
        for name, value in self.module.state_dict().items():
            if value.dtype.is_floating_point:
                value.mul_(d).add_(source[name].detach(), alpha=1 - d)
            else:
                value.copy_(source[name])
