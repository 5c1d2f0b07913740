"""Parameter and FLOP counts, from torch's own FLOP counter rather than a hand count."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def count_parameters(model: nn.Module) -> int:
    """Trainable and frozen parameters (BatchNorm running statistics are buffers, not counted)."""
    return sum(p.numel() for p in model.parameters())


def count_flops(model: nn.Module, input_size: int | tuple[int, int], batch: int = 1) -> int:
    """Floating-point operations of one forward pass (a multiply-add counts as two, as in
    Darknet's "BFLOPs"). Convolutions and matrix products only, which is where all but a
    fraction of a percent of a YOLOv3's work lies."""
    h, w = (input_size, input_size) if isinstance(input_size, int) else input_size
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    x = torch.zeros(batch, 3, h, w, device=device)
    counter = FlopCounterMode(display=False)
    try:
        with torch.no_grad(), counter:
            model(x)
    finally:
        model.train(was_training)
    return int(counter.get_total_flops())


def complexity_table(rows: list[tuple[str, nn.Module, int]]) -> str:
    """Markdown table of parameters and GFLOPs for (label, model, input size) rows."""
    lines = ["| model | input | parameters | GFLOPs |", "|---|---|---|---|"]
    for label, model, size in rows:
        lines.append(f"| {label} | {size} | {count_parameters(model):,} | {count_flops(model, size) / 1e9:.2f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    from models.registry import create

    print(complexity_table([
        ("YOLOv3, 80 classes, width 1.0", create("yolov3", num_classes=80), 416),
        ("YOLOv3-SPP, 80 classes, width 1.0", create("yolov3-spp", num_classes=80), 416),
        ("YOLOv3-SPP, 1 class, width 1.0", create("yolov3-spp"), 512),
        ("YOLOv3-SPP, 1 class, width 0.25 (CPU baseline)", create("yolov3-spp", width=0.25), 256),
    ]))
