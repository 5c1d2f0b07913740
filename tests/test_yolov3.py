import math

import pytest
import torch

from models import create
from models.complexity import count_flops, count_parameters
from models.decode import YoloDecoder


@pytest.mark.parametrize("size", [320, 416, 608])
def test_shapes_train_and_eval(size):
    model = create("yolov3-spp", width=0.125, input_size=size, num_classes=2)
    model.train()
    raw = model(torch.rand(2, 3, size, size))
    assert [tuple(r.shape) for r in raw] == [
        (2, 3 * 7, size // s, size // s) for s in (8, 16, 32)
    ]
    model.eval()
    with torch.no_grad():
        dec = model(torch.rand(2, 3, size, size))
    cells = sum((size // s) ** 2 for s in (8, 16, 32))
    assert tuple(dec.shape) == (2, 3 * cells, 7)
    # Boxes are ordered (x1 <= x2, y1 <= y2) and scores are probabilities.
    assert (dec[..., 2] >= dec[..., 0]).all() and (dec[..., 3] >= dec[..., 1]).all()
    assert ((dec[..., 4:] >= 0) & (dec[..., 4:] <= 1)).all()


def test_non_square_input_is_accepted():
    model = create("yolov3", width=0.125).eval()
    with torch.no_grad():
        dec = model(torch.rand(1, 3, 256, 320))
    assert dec.shape[1] == 3 * (32 * 40 + 16 * 20 + 8 * 10)


def test_decode_hand_computed_case():
    anchors = ((10, 20), (30, 40), (50, 60), (1, 1), (2, 2), (3, 3), (4, 4), (5, 5), (6, 6))
    decoder = YoloDecoder(anchors, (8, 16, 32))
    # Stride-8 map for a 32x32 input: 4x4 cells, 3 anchors, 5+1 values each.
    s8 = torch.zeros(1, 18, 4, 4)
    # Anchor 1 (30x40) at row 2, column 3: tx=ty=0 -> centre of the cell; tw=ln 2, th=0.
    a, row, col = 1, 2, 3
    s8[0, a * 6 + 2, row, col] = math.log(2.0)
    s8[0, a * 6 + 4, row, col] = 2.0   # objectness logit
    s8[0, a * 6 + 5, row, col] = -1.0  # class logit
    out = decoder([s8, torch.zeros(1, 18, 2, 2), torch.zeros(1, 18, 1, 1)])
    assert out.shape == (1, 3 * (16 + 4 + 1), 6)
    idx = a * 16 + row * 4 + col
    cx, cy = (col + 0.5) * 8, (row + 0.5) * 8
    w, h = 2 * 30, 40
    expected = torch.tensor([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2,
                             1 / (1 + math.exp(-2.0)), 1 / (1 + math.exp(1.0))])
    torch.testing.assert_close(out[0, idx], expected)
    # An untouched stride-32 cell: centre of the single cell, anchor (6, 6) exactly.
    last = out[0, -1]
    torch.testing.assert_close(last[:4], torch.tensor([16 - 3, 16 - 3, 16 + 3, 16 + 3.0]))


def test_published_size_of_full_yolov3():
    """Darknet's yolov3.cfg at 416 px: about 61.9 M parameters and 65.86 BFLOPs."""
    model = create("yolov3", num_classes=80)
    params = count_parameters(model)
    assert 61.5e6 <= params <= 62.0e6
    assert params == 61_949_149
    flops = count_flops(model, 416)
    assert 65.3e9 <= flops <= 65.9e9
