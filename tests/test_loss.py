import math

import numpy as np
import torch

from models import create
from training.box_ops import box_iou
from training.data.loader import to_tensor
from training.loop.loss import YoloLoss

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


#: Steps of the fit below and the IoU every positive prediction must reach; see its docstring.
FIT_STEPS = 60
FIT_IOU = 0.75


def _two_frames(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Two synthetic 64 px frames with one bright "polyp" each (float64), and their targets."""
    rng = np.random.default_rng(seed)
    images, rows = [], []
    for b in range(2):
        image, _, boxes = draw_sample(rng, 64, 64, max_polyps=1)
        images.append(to_tensor(image))
        rows.append([b, 0, *boxes[0]])
    return torch.stack(images).double(), torch.tensor(rows, dtype=torch.float32)


def _fit(model, loss_fn: YoloLoss, x: torch.Tensor, targets: torch.Tensor, steps: int = FIT_STEPS):
    """Adam at lr 1e-2, warmed up over the first ten steps (a full-size first step can throw
    a prediction into the saturated corner of the decode, where it stays), then decayed to
    zero on a cosine (the fit ends settled, not mid-oscillation). Returns the loss and its
    parts before and after."""
    warmup = 10
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    schedule = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: 0.1 + 0.9 * i / warmup if i < warmup else
                                                 0.5 * (1 + math.cos(math.pi * (i - warmup) / (steps - warmup))))
    first = None
    for _ in range(steps):
        total, parts = loss_fn(model(x), targets)
        first = first or (float(total.detach()), parts)
        opt.zero_grad()
        total.backward()
        opt.step()
        schedule.step()
    with torch.no_grad():
        total, parts = loss_fn(model(x), targets)
    return first, (float(total), parts)


def _positive_ious(model, loss_fn: YoloLoss, x: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """IoU with its target of the box decoded at every (image, anchor, cell) the loss
    makes responsible for a target (its best anchor and any other well-shaped one)."""
    with torch.no_grad():
        raw = model(x)
    ious = []
    for s, pos in enumerate(loss_fn._assign(targets, loss_fn.anchors, [tuple(r.shape[2:]) for r in raw])):
        if pos is not None:
            b, a, gy, gx, t = pos
            _, _, h, w = raw[s].shape
            boxes = model.decoder.decode_scale(raw[s], s)[b, a * h * w + gy * w + gx, :4].double()
            ious.append(box_iou(boxes[:, None], targets[t, None, 2:6].double())[:, 0, 0])
    return torch.cat(ious)


def test_optimising_the_loss_fits_a_batch():
    """Descending the loss moves every prediction it makes responsible for a box (each
    target's best anchor at its centre cell, and the other well-shaped anchors there)
    onto that box, in both images of the batch, and brings the loss down by a large factor.

    The fit is chaotic: the first steps of a small network trained from scratch amplify
    rounding, so another CPU (AVX-512 or AVX2 kernels, another summation order) follows
    another path. So the test asserts only what held on every path measured, with
    margin. Measured over 171 fits of this recipe (60 steps, Adam 1e-2 warmed up, then
    decayed on a cosine): 155 other problems (network seeds 0-19 crossed with data seeds
    0-9, 19 and 23, float64 and float32) and this batch with its initial weights
    perturbed by 1e-6 relative noise (16 draws: far more than any rounding difference)
    under ATEN_CPU_CAPABILITY avx512, avx2 and default (some on 2 threads). The worst
    IoU of a positive prediction with its box was 0.875 (0.94 on this batch; the median
    0.98, from 0.2-0.75 at the start); the worst ratios of final to first loss were 0.071
    (total), 0.057 (box term) and 0.13 (objectness term). The thresholds (IoU 0.75; ratios
    0.2, 0.15, 0.35) keep a wide margin over all of them. float64 keeps the network's own
    rounding, where paths first part, 1e9 times below float32's.

    Measured and not asserted, because no few-second fit makes it robust: that the
    *highest-scoring* box is the right one. At 64 px the objectness term weighs 0.01 and
    is far from fitted: the positives and the strongest background cell (often the other
    image's positive cell) stay within a fraction of a logit of each other and trade
    places from step to step, so that arg-max is decided by rounding. It is what failed
    in this test's former version (arg-max box IoU > 0.5 after 120 steps at a constant lr:
    IoU 0.0 on AMD Zen 4 and newer CPUs, while the loss still fell). Without the warm-up, one fit in
    25 threw a secondary anchor into the saturated corner of the decode, where it stayed.
    """
    torch.manual_seed(0)
    model = create("yolov3", width=0.125, input_size=64).train().double()
    loss_fn = YoloLoss(model.config)
    x, targets = _two_frames(0)
    assert float(_positive_ious(model, loss_fn, x, targets).min()) < 0.5  # far from fitted at the start
    (first, first_parts), (last, last_parts) = _fit(model, loss_fn, x, targets)
    assert last < 0.2 * first
    assert last_parts["box"] < 0.15 * first_parts["box"] and last_parts["obj"] < 0.35 * first_parts["obj"]
    ious = _positive_ious(model, loss_fn, x, targets)
    assert float(ious.min()) > FIT_IOU, ious


def test_the_share_of_boxes_an_anchor_can_learn_by_hand():
    import numpy as np
    import pytest

    from training.data.anchors import MATCH_RATIO, matched_share
    from training.loop.loss import LossConfig

    assert MATCH_RATIO == LossConfig().anchor_ratio  # the report uses the loss's own rule
    anchors = np.array([[28.0, 30.0], [100.0, 100.0]])
    boxes = np.array([[8.0, 8.0], [6.0, 8.0], [28.0, 30.0], [300.0, 300.0]])
    # 8x8 is within 4x of 28x30 (3.5x, 3.75x); 6x8 is not (4.67x); 300x300 is 3x the larger anchor.
    assert matched_share(boxes, anchors) == 0.75
    # Halved: 4x4 and 3x4 have no anchor, 14x15 and 150x150 do; none is under 2 px.
    assert matched_share(boxes, anchors, scale=0.5) == 0.5
    # At 1/4 the 6x8 box (1.5 x 2 px) is a sliver and is dropped, not counted as a miss; of
    # 2x2, 7x7.5 (exactly 4x: not within) and 75x75, only the last has an anchor.
    assert matched_share(boxes, anchors, scale=0.25) == pytest.approx(1 / 3)
