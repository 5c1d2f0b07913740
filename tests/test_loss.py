import numpy as np
import torch

from models import create
from training.box_ops import box_iou
from training.loader import to_tensor
from training.loss import YoloLoss

from .synthetic import draw_sample


def _targets():
    # image 0: one box; image 1: two boxes (batch index, class, x1, y1, x2, y2)
    return torch.tensor([[0, 0, 10, 12, 40, 50], [1, 0, 60, 30, 120, 100], [1, 0, 5, 70, 25, 90.0]])


def test_assignment_uses_centre_cell_and_best_anchor():
    model = create("yolov3", width=0.125, input_size=128)
    loss = YoloLoss(model.config)
    targets = _targets()
    pos = loss._assign(targets, loss.anchors, [(16, 16), (8, 8), (4, 4)])
    anchors = loss.anchors
    for t_row, box in enumerate(targets):
        wh = box[4:6] - box[2:4]
        inter = torch.minimum(wh, anchors).prod(1)
        best = int((inter / (wh.prod() + anchors.prod(1) - inter)).argmax())
        s, a = best // 3, best % 3
        b_idx, a_idx, gy, gx, t_idx = pos[s]
        hit = (t_idx == t_row) & (a_idx == a)
        assert hit.any(), f"target {t_row} not assigned to its best anchor {best}"
        stride = (8, 16, 32)[s]
        cx, cy = (box[2] + box[4]) / 2, (box[3] + box[5]) / 2
        assert int(gx[hit][0]) == int(cx // stride) and int(gy[hit][0]) == int(cy // stride)
        assert int(b_idx[hit][0]) == int(box[0])


def test_loss_is_finite_without_targets():
    model = create("yolov3", width=0.125, input_size=64).train()
    raw = model(torch.rand(2, 3, 64, 64))
    total, parts = YoloLoss(model.config)(raw, torch.zeros(0, 6))
    assert torch.isfinite(total) and parts["box"] == 0 and parts["obj"] > 0


def test_ignore_zone_spares_good_unassigned_predictions():
    model = create("yolov3", width=0.125, input_size=64)
    loss = YoloLoss(model.config)
    gt = torch.tensor([[[8.0, 8.0, 40.0, 40.0]]])
    valid = torch.ones(1, 1, dtype=torch.bool)
    boxes = torch.zeros(1, 3, 2, 2, 4)
    boxes[0, 0, 0, 0] = torch.tensor([8.0, 8.0, 40.0, 41.0])   # IoU 0.97: ignored
    boxes[0, 1, 1, 1] = torch.tensor([30.0, 30.0, 60.0, 60.0])  # small overlap: still background
    ignored = loss._ignored(boxes, (gt, valid))
    assert ignored[0, 0, 0, 0] == 1 and ignored[0, 1, 1, 1] == 0 and ignored.sum() == 1


def test_optimising_the_loss_fits_a_batch():
    torch.manual_seed(0)
    model = create("yolov3", width=0.125, input_size=64).train()
    loss_fn = YoloLoss(model.config)
    # Two synthetic frames with one bright "polyp" each; the boxes are the ellipses' extents.
    rng = np.random.default_rng(0)
    images, rows = [], []
    for b in range(2):
        image, _, boxes = draw_sample(rng, 64, 64, max_polyps=1)
        images.append(to_tensor(image))
        rows.append([b, 0, *boxes[0]])
    x = torch.stack(images)
    targets = torch.tensor(rows, dtype=torch.float32)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    first = None
    for _ in range(120):
        total, parts = loss_fn(model(x), targets)
        first = first if first is not None else float(total)
        opt.zero_grad()
        total.backward()
        opt.step()
    assert float(total) < 0.3 * first
    with torch.no_grad():  # decode with batch statistics: 40 steps leave running stats unsettled
        pred = model.decoder(model(x))
    for b in range(2):
        best = pred[b, pred[b, :, 4].argmax(), :4]
        assert box_iou(best[None], targets[b:b + 1, 2:6])[0, 0] > 0.5
