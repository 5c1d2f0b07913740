"""The YOLOv3 loss: CIoU box loss, objectness BCE with an ignore zone, class BCE.

Assignment, classic decode: each ground-truth box goes to the grid cell holding its
centre, at every anchor (of all nine, across the three scales) whose shape IoU with the
box exceeds ``assign_iou``, and always to its single best anchor (YOLOv3's rule).

Assignment, ``new_coords`` decode: every anchor whose width and height are within
``anchor_ratio`` of the box's, at the centre cell and the two nearest neighbouring cells
(the decode reaches half a cell beyond its own), as in Scaled-YOLOv4/YOLOv5. Three to
nine times more positives per box: the main reason that recipe learns fast from scratch.

Either way, predictions that already overlap a target by more than ``ignore_iou`` are
not punished as background (YOLOv3's ignore threshold).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from models.config import YoloConfig
from models.decode import box_centre_size, split_anchor_axis
from training.box_ops import box_iou, complete_iou


@dataclass(frozen=True)
class LossConfig:
    box: float = 0.05
    obj: float = 1.0
    cls: float = 0.5
    ignore_iou: float = 0.7
    assign_iou: float = 0.2
    anchor_ratio: float = 4.0
    #: Objectness weight per scale, stride 8 first: finer maps have more background cells.
    scale_balance: tuple[float, float, float] = (4.0, 1.0, 0.4)


class YoloLoss:
    """Callable ``(raw_maps, targets) -> (loss, parts)``.

    ``raw_maps``: the training-mode outputs (stride 8 first). ``targets``: ``[M, 6]``
    rows (image index, class, x1, y1, x2, y2) in input pixels. ``loss`` is scaled by the
    batch size (as in Darknet and Ultralytics); ``parts`` holds the detached box, obj
    and cls terms.
    """

    def __init__(self, config: YoloConfig, cfg: LossConfig | None = None) -> None:
        self.cfg = cfg or LossConfig()
        self.num_classes = config.num_classes
        self.anchors = torch.tensor(config.anchors, dtype=torch.float32)  # [9, 2]
        self.strides = sorted(config.anchors_by_stride)
        self.new_coords = config.new_coords
        # Ultralytics' normalisation: objectness scales with the number of cells, the
        # class term with the class count.
        self.obj_gain = self.cfg.obj * (config.input_size / 640) ** 2
        self.cls_gain = self.cfg.cls * self.num_classes / 80

    def __call__(self, raw_maps: list[torch.Tensor], targets: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        device = raw_maps[0].device
        batch = raw_maps[0].shape[0]
        targets = targets.to(device)
        anchors = self.anchors.to(device)
        positives = self._assign(targets, anchors, [tuple(r.shape[2:]) for r in raw_maps])
        gt_by_image = _pad_by_image(targets, batch)
        l_box = torch.zeros((), device=device)
        l_obj = torch.zeros((), device=device)
        l_cls = torch.zeros((), device=device)
        for s, raw in enumerate(raw_maps):
            p = split_anchor_axis(raw, 3).float()  # [B, 3, H, W, 5+C]
            stride = self.strides[s]
            scale_anchors = anchors[3 * s:3 * s + 3]
            boxes = _decode(p[..., :4], stride, scale_anchors, self.new_coords)
            tobj = torch.zeros(p.shape[:4], device=device)
            weight = 1.0 - self._ignored(boxes.detach(), gt_by_image)
            pos = positives[s]
            if pos is not None:
                b, a, gy, gx, t = pos
                iou, ciou = complete_iou(boxes[b, a, gy, gx], targets[t, 2:6])
                l_box = l_box + (1.0 - ciou).mean()
                tobj[b, a, gy, gx] = iou.detach().clamp(min=0).to(tobj.dtype)
                weight[b, a, gy, gx] = 1.0
                if self.num_classes > 1:
                    onehot = F.one_hot(targets[t, 1].long(), self.num_classes).float()
                    l_cls = l_cls + F.binary_cross_entropy_with_logits(p[b, a, gy, gx, 5:], onehot)
            obj = F.binary_cross_entropy_with_logits(p[..., 4], tobj, weight=weight)
            l_obj = l_obj + self.cfg.scale_balance[s] * obj
        l_box = self.cfg.box * l_box
        l_obj = self.obj_gain * l_obj
        l_cls = self.cls_gain * l_cls
        total = (l_box + l_obj + l_cls) * batch
        parts = {"box": float(l_box.detach()), "obj": float(l_obj.detach()), "cls": float(l_cls.detach())}
        return total, parts

    def _assign(self, targets: torch.Tensor, anchors: torch.Tensor,
                grids: list[tuple[int, int]]) -> list[tuple | None]:
        """Per scale: (image, anchor, row, col, target row) index tensors of positives."""
        if self.new_coords:
            return self._assign_neighbours(targets, anchors, grids)
        out: list[tuple | None] = [None] * len(self.strides)
        if len(targets) == 0:
            return out
        wh = targets[:, 4:6] - targets[:, 2:4]
        centre = (targets[:, 2:4] + targets[:, 4:6]) / 2
        inter = torch.minimum(wh[:, None], anchors[None]).prod(-1)
        shape_iou = inter / (wh.prod(-1)[:, None] + anchors.prod(-1)[None] - inter)  # [M, 9]
        chosen = shape_iou > self.cfg.assign_iou
        chosen[torch.arange(len(targets)), shape_iou.argmax(1)] = True
        t_idx, anchor_idx = chosen.nonzero(as_tuple=True)
        for s, stride in enumerate(self.strides):
            sel = (anchor_idx // 3) == s
            if not sel.any():
                continue
            t, a = t_idx[sel], anchor_idx[sel] % 3
            cells = (centre[t] / stride).long()
            h, w = grids[s]
            gx = cells[:, 0].clamp(0, w - 1)  # a centre on the far edge stays inside
            gy = cells[:, 1].clamp(0, h - 1)
            out[s] = (targets[t, 0].long(), a, gy, gx, t)
        return out

    def _assign_neighbours(self, targets: torch.Tensor, anchors: torch.Tensor,
                           grids: list[tuple[int, int]]) -> list[tuple | None]:
        out: list[tuple | None] = [None] * len(self.strides)
        if len(targets) == 0:
            return out
        wh = targets[:, 4:6] - targets[:, 2:4]
        centre = (targets[:, 2:4] + targets[:, 4:6]) / 2
        # The centre cell, then the neighbour on the near side in x, then in y.
        offsets = torch.tensor([[0, 0], [-1, 0], [0, -1], [1, 0], [0, 1]], device=targets.device)
        for s, stride in enumerate(self.strides):
            h, w = grids[s]
            ratio = wh[:, None, :] / anchors[None, 3 * s:3 * s + 3]           # [M, 3, 2]
            match = torch.maximum(ratio, 1 / ratio).amax(-1) < self.cfg.anchor_ratio
            t, a = match.nonzero(as_tuple=True)
            if len(t) == 0:
                continue
            g = centre[t] / stride
            frac = g % 1
            near = torch.stack([
                torch.ones_like(frac[:, 0], dtype=torch.bool),
                (frac[:, 0] < 0.5) & (g[:, 0] > 1), (frac[:, 1] < 0.5) & (g[:, 1] > 1),
                (frac[:, 0] > 0.5) & (g[:, 0] < w - 1), (frac[:, 1] > 0.5) & (g[:, 1] < h - 1),
            ])                                                                  # [5, P]
            k, p = near.nonzero(as_tuple=True)
            cells = g[p].long() + offsets[k]
            gx = cells[:, 0].clamp(0, w - 1)
            gy = cells[:, 1].clamp(0, h - 1)
            out[s] = (targets[t[p], 0].long(), a[p], gy, gx, t[p])
        return out

    def _ignored(self, boxes: torch.Tensor, gt_by_image: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """1 where a prediction overlaps some target of its image above ``ignore_iou``."""
        gt, valid = gt_by_image
        b = boxes.shape[0]
        if gt.shape[1] == 0:
            return torch.zeros(boxes.shape[:4], device=boxes.device)
        iou = box_iou(boxes.reshape(b, -1, 4), gt)  # [B, N, G]
        iou = iou.masked_fill(~valid[:, None, :], 0)
        return (iou.max(-1).values > self.cfg.ignore_iou).float().view(boxes.shape[:4])


def _decode(p: torch.Tensor, stride: int, anchors: torch.Tensor, new_coords: bool) -> torch.Tensor:
    """Raw ``[B, A, H, W, 4]`` -> xyxy boxes in input pixels (the model's own maths)."""
    _, _, h, w, _ = p.shape
    ys, xs = torch.meshgrid(torch.arange(h, device=p.device), torch.arange(w, device=p.device), indexing="ij")
    grid = torch.stack((xs, ys), -1).view(1, 1, h, w, 2).float()
    centre, size = box_centre_size(p, grid, stride, anchors.view(1, -1, 1, 1, 2), new_coords, clamp=True)
    return torch.cat((centre - size / 2, centre + size / 2), -1)


def _pad_by_image(targets: torch.Tensor, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Targets as ``[B, G, 4]`` boxes plus a ``[B, G]`` validity mask (G = most per image)."""
    device = targets.device
    if len(targets) == 0:
        return torch.zeros(batch, 0, 4, device=device), torch.zeros(batch, 0, dtype=torch.bool, device=device)
    img = targets[:, 0].long()
    counts = torch.bincount(img, minlength=batch)
    g = int(counts.max())
    boxes = torch.zeros(batch, g, 4, device=device)
    valid = torch.zeros(batch, g, dtype=torch.bool, device=device)
    order = torch.argsort(img, stable=True)
    img_sorted = img[order]
    starts = torch.cumsum(counts, 0) - counts
    slot = torch.arange(len(targets), device=device) - starts[img_sorted]
    boxes[img_sorted, slot] = targets[order, 2:6]
    valid[img_sorted, slot] = True
    return boxes, valid
