"""Box geometry in torch (xyxy): pairwise IoU and the CIoU used by the loss."""

from __future__ import annotations

import math

import torch

EPS = 1e-7


def box_area(boxes: torch.Tensor) -> torch.Tensor:
    return (boxes[..., 2] - boxes[..., 0]).clamp(min=0) * (boxes[..., 3] - boxes[..., 1]).clamp(min=0)


def box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pairwise IoU: ``[..., N, 4] x [..., M, 4] -> [..., N, M]``."""
    lt = torch.maximum(a[..., :, None, :2], b[..., None, :, :2])
    rb = torch.minimum(a[..., :, None, 2:], b[..., None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    union = box_area(a)[..., :, None] + box_area(b)[..., None, :] - inter
    return inter / (union + EPS)


def complete_iou(pred: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Element-wise (IoU, CIoU) of matched boxes ``[N, 4]`` (Zheng et al. 2020).

    CIoU adds to IoU a penalty for the distance between centres (relative to the
    enclosing box) and for differing aspect ratios, so it still has a gradient when the
    boxes do not overlap -- which makes it converge faster than plain IoU or GIoU.
    """
    px1, py1, px2, py2 = pred.unbind(-1)
    tx1, ty1, tx2, ty2 = target.unbind(-1)
    inter = (torch.minimum(px2, tx2) - torch.maximum(px1, tx1)).clamp(min=0) * \
        (torch.minimum(py2, ty2) - torch.maximum(py1, ty1)).clamp(min=0)
    pw, ph = px2 - px1, (py2 - py1).clamp(min=EPS)
    tw, th = tx2 - tx1, (ty2 - ty1).clamp(min=EPS)
    union = pw * ph + tw * th - inter + EPS
    iou = inter / union
    cw = torch.maximum(px2, tx2) - torch.minimum(px1, tx1)
    ch = torch.maximum(py2, ty2) - torch.minimum(py1, ty1)
    diag = cw ** 2 + ch ** 2 + EPS
    centre_dist = ((px1 + px2 - tx1 - tx2) ** 2 + (py1 + py2 - ty1 - ty2) ** 2) / 4
    v = (4 / math.pi ** 2) * (torch.atan(tw / th) - torch.atan(pw / ph)) ** 2
    with torch.no_grad():
        alpha = v / (v - iou + (1 + EPS))
    return iou, iou - (centre_dist / diag + v * alpha)
