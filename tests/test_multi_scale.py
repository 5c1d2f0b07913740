"""Multi-scale training: the sizes a batch may take, boxes that follow the pixels, and a
training run that really sees several input sizes."""

import json

import numpy as np
import pytest
import torch

from training.data.multi_scale import rescale_batch, size_choices, size_for_step
from training.loop.loss import YoloLoss
from training.loop.trainer import TrainConfig, Trainer

from .synthetic import write_kvasir_like


def test_sizes_are_stride_multiples_within_the_spread():
    assert size_choices(320, 0.5) == [160, 192, 224, 256, 288, 320, 352, 384, 416, 448, 480]
    assert size_choices(320, 0.0) == [320]
    assert size_choices(64, 0.9) == [32, 64, 96]  # never below one stride
    for bad in (-0.1, 1.0):
        with pytest.raises(ValueError, match="spread"):
            size_choices(320, bad)


def test_step_sizes_are_reproducible_and_cover_the_range():
    sizes = [size_for_step(s, 7, 320, 0.5) for s in range(400)]
    assert sizes == [size_for_step(s, 7, 320, 0.5) for s in range(400)]  # a resume draws the same
    assert set(sizes) == set(size_choices(320, 0.5))
    assert sizes != [size_for_step(s, 8, 320, 0.5) for s in range(400)]  # the seed matters
    assert {size_for_step(s, 0, 320, 0.0) for s in range(50)} == {320}


@pytest.mark.parametrize("size", [32, 96])
def test_boxes_follow_the_pixels(size):
    images = torch.zeros(2, 3, 64, 64)
    images[1, :, 16:48, 8:40] = 1.0  # a bright square in image 1: x 8-40, y 16-48
    targets = torch.tensor([[1, 0, 8.0, 16.0, 40.0, 48.0]])
    out, scaled = rescale_batch(images, targets, size)
    assert out.shape == (2, 3, size, size)
    s = size / 64
    torch.testing.assert_close(scaled, torch.tensor([[1, 0, 8 * s, 16 * s, 40 * s, 48 * s]]))
    assert torch.equal(targets, torch.tensor([[1, 0, 8.0, 16.0, 40.0, 48.0]]))  # the input is not changed
    bright = out[1, 0] > 0.5
    ys, xs = np.nonzero(bright.numpy())
    x1, y1, x2, y2 = scaled[0, 2:].tolist()
    assert abs(xs.min() - x1) <= 1 and abs(xs.max() + 1 - x2) <= 1
    assert abs(ys.min() - y1) <= 1 and abs(ys.max() + 1 - y2) <= 1
    assert not out[0].any()  # the empty image stays empty


def test_same_size_is_a_no_op():
    images, targets = torch.rand(1, 3, 64, 64), torch.tensor([[0, 0, 1.0, 2.0, 3.0, 4.0]])
    out, scaled = rescale_batch(images, targets, 64)
    assert out is images and scaled is targets


def test_training_sees_several_sizes_with_boxes_inside_them(tmp_path, monkeypatch):
    data = write_kvasir_like(tmp_path / "kv", n=12)
    seen: list[tuple[int, float]] = []
    original = YoloLoss.__call__

    def spy(self, raw_maps, targets):
        size = raw_maps[0].shape[-1] * 8  # the stride-8 map
        seen.append((size, float(targets[:, 2:6].max()) if len(targets) else 0.0))
        return original(self, raw_maps, targets)

    monkeypatch.setattr(YoloLoss, "__call__", spy)
    out = tmp_path / "run"
    cfg = TrainConfig(data=str(data), out=str(out), width=0.125, img=64, epochs=2, batch=2, workers=0,
                      close_mosaic=1, warmup_epochs=0.5, multi_scale=0.5, mine_negatives=False,
                      negative_fraction=0.0)
    Trainer(cfg, show_progress=False).run()
    sizes = {size for size, _ in seen}
    assert sizes <= {32, 64, 96} and len(sizes) >= 2
    assert all(top <= size + 1e-3 for size, top in seen)  # every box lies inside its batch's input
    assert json.loads((out / "train_config.json").read_text())["multi_scale"] == 0.5
    assert TrainConfig.from_dict({"data": "d"}).multi_scale == 0.0  # runs saved before it: one size


def test_a_bad_spread_fails_before_training(tmp_path):
    data = write_kvasir_like(tmp_path / "kv", n=4)
    cfg = TrainConfig(data=str(data), out=str(tmp_path / "run"), img=64, epochs=1, workers=0, multi_scale=1.5)
    with pytest.raises(ValueError, match="spread"):
        Trainer(cfg, show_progress=False).run()
