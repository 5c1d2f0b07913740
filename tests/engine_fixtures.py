"""A small, briefly trained model shared by the engine tests (built once per session).

A freshly initialised network predicts nearly the same score everywhere, which turns NMS
into a coin toss between equal scores; sixty steps on synthetic polyps give it the peaked
outputs of a real detector, so comparisons between backends are meaningful.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from models import create, save_checkpoint
from training.data.loader import to_tensor
from training.loop.loss import YoloLoss

from .synthetic import draw_sample


def make_checkpoint(path: Path, size: int = 96, seed: int = 0, steps: int = 60) -> Path:
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = create("yolov3-spp", width=0.125, input_size=size, new_coords=True).train()
    images, rows = [], []
    for b in range(8):
        image, _, boxes = draw_sample(rng, size, size, max_polyps=2)
        images.append(to_tensor(image))
        rows.extend([b, 0, *box] for box in boxes)
    x, targets = torch.stack(images), torch.tensor(rows, dtype=torch.float32)
    loss_fn = YoloLoss(model.config)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(steps):
        loss, _ = loss_fn(model(x), targets)
        opt.zero_grad()
        loss.backward()
        opt.step()
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    for bn in bns:  # exact running averages of the training images, as after real training
        bn.reset_running_stats()
        bn.momentum = None
    with torch.no_grad():
        model(x)
    for bn in bns:
        bn.momentum = 0.03
    return save_checkpoint(path, model.eval())
