"""Knowledge distillation for YOLO heads: a pruned student learns from the unpruned teacher.

Objectness-scaled distillation (Mehta & Ozturk 2018): the student's objectness is pulled
towards the teacher's (binary cross-entropy against the teacher's probability at every
anchor of every cell), and its boxes (and classes, when there are several) towards the
teacher's, weighted by the teacher's objectness -- so the bulk of background cells, where
the teacher's boxes mean nothing, carries no box signal. Student and teacher must share
the head layout (same anchors, strides and input size), which a pruned network and its
parent always do. The terms use the detection loss's own gains, so ``weight=1`` makes the
teacher count as much as the labels.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from models.config import YoloConfig
from models.decode import split_anchor_axis
from training.loop.loss import LossConfig, YoloLoss, _decode


class DistillationLoss:
    """Callable ``(student_raw, teacher_raw) -> (loss, value)``; loss scaled by batch size."""

    def __init__(self, config: YoloConfig, cfg: LossConfig | None = None, weight: float = 1.0) -> None:
        self.head = YoloLoss(config, cfg)  # anchors, strides, decode and gains: the detection loss's own
        self.weight = weight

    def __call__(self, student_raw: list[torch.Tensor], teacher_raw: list[torch.Tensor]) -> tuple[torch.Tensor, float]:
        if len(student_raw) != len(teacher_raw) or any(s.shape != t.shape for s, t in zip(student_raw, teacher_raw)):
            raise ValueError("student and teacher heads differ in shape: distillation needs the same head layout "
                             f"({[tuple(s.shape) for s in student_raw]} vs {[tuple(t.shape) for t in teacher_raw]})")
        head, device = self.head, student_raw[0].device
        anchors = head.anchors.to(device)
        batch = student_raw[0].shape[0]
        l_obj = torch.zeros((), device=device)
        l_box = torch.zeros((), device=device)
        l_cls = torch.zeros((), device=device)
        for s, (raw_s, raw_t) in enumerate(zip(student_raw, teacher_raw)):
            ps, pt = split_anchor_axis(raw_s, 3).float(), split_anchor_axis(raw_t, 3).float().detach()
            t_obj = torch.sigmoid(pt[..., 4])
            l_obj = l_obj + head.cfg.scale_balance[s] * F.binary_cross_entropy_with_logits(ps[..., 4], t_obj)
            stride, scale_anchors = head.strides[s], anchors[3 * s:3 * s + 3]
            box_s = _decode(ps[..., :4], stride, scale_anchors, head.new_coords)
            box_t = _decode(pt[..., :4], stride, scale_anchors, head.new_coords)
            mass = t_obj.sum().clamp(min=1.0)
            l_box = l_box + (t_obj * (box_s - box_t).abs().sum(-1) / stride).sum() / mass
            if head.num_classes > 1:
                per_cell = F.binary_cross_entropy_with_logits(ps[..., 5:], torch.sigmoid(pt[..., 5:]),
                                                              reduction="none").mean(-1)
                l_cls = l_cls + (t_obj * per_cell).sum() / mass
        total = self.weight * (head.obj_gain * l_obj + head.cfg.box * l_box + head.cls_gain * l_cls) * batch
        return total, float(total.detach()) / batch
