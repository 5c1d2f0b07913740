"""Multi-scale training: the sizes a batch may take, boxes that follow the pixels, and a
training run that really sees several input sizes."""

import json

import numpy as np
import pytest
import torch

from training.data.augment.multi_scale import rescale_batch, size_choices, size_for_step
from training.loop.loss import YoloLoss
from training.loop.trainer import TrainConfig, Trainer

from .synthetic import write_kvasir_like


def test_sizes_are_stride_multiples_within_the_spread():
    assert size_choices(320, 0.5) == [160, 192, 224, 256, 288, 320, 352, 384, 416, 448, 480]
    assert size_choices(320, 0.0) == [320]
    assert size_choices(64, 0.9) == [64, 96]  # never below the smallest input the network takes (64)
    assert size_choices(320, 0.9) == list(range(64, 608 + 1, 32))
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


def test_boxes_shrunk_to_slivers_are_dropped():
    targets = torch.tensor([[0, 0, 10.0, 10.0, 13.0, 40.0], [0, 0, 20.0, 20.0, 40.0, 40.0]])
    _, scaled = rescale_batch(torch.zeros(1, 3, 64, 64), targets, 32)  # the 3-px-wide box becomes 1.5 px
    torch.testing.assert_close(scaled, torch.tensor([[0, 0, 10.0, 10.0, 20.0, 20.0]]))


def test_training_feeds_the_loss_boxes_scaled_with_each_batch(tmp_path, monkeypatch):
    from training.loop import trainer

    data = write_kvasir_like(tmp_path / "kv", n=12)
    monkeypatch.setattr(trainer, "size_for_step", lambda step, seed, img, spread: (64, 96)[step % 2])
    given: list[torch.Tensor] = []  # the loader's boxes, before rescaling
    real_rescale = trainer.rescale_batch

    def recording_rescale(images, targets, size):
        given.append(targets.clone())
        return real_rescale(images, targets, size)

    monkeypatch.setattr(trainer, "rescale_batch", recording_rescale)
    seen: list[tuple[int, torch.Tensor]] = []
    original = YoloLoss.__call__

    def spy(self, raw_maps, targets):
        seen.append((raw_maps[0].shape[-1] * 8, targets.detach().clone()))  # the stride-8 map gives the size
        return original(self, raw_maps, targets)

    monkeypatch.setattr(YoloLoss, "__call__", spy)
    out = tmp_path / "run"
    cfg = TrainConfig(data=str(data), out=str(out), width=0.125, img=64, epochs=2, batch=2, workers=0,
                      close_mosaic=1, warmup_epochs=0.5, multi_scale=0.5, mine_negatives=False,
                      negative_fraction=0.0)
    Trainer(cfg, show_progress=False).run()
    assert [size for size, _ in seen] == [(64, 96)[i % 2] for i in range(len(seen))] and len(seen) >= 4
    for (size, targets), before in zip(seen, given, strict=True):
        expected = before.clone()
        expected[:, 2:6] *= size / 64
        torch.testing.assert_close(targets.cpu(), expected)  # the loss gets the rescaled boxes
    assert any(float(t[:, 2:6].max()) > 64 for size, t in seen if size == 96 and len(t))
    assert json.loads((out / "train_config.json").read_text())["multi_scale"] == 0.5
    assert TrainConfig.from_dict({"data": "d"}).multi_scale == 0.0  # runs saved before it: one size


def test_a_bad_spread_fails_before_training(tmp_path):
    data = write_kvasir_like(tmp_path / "kv", n=4)
    cfg = TrainConfig(data=str(data), out=str(tmp_path / "run"), img=64, epochs=1, workers=0, multi_scale=1.5)
    with pytest.raises(ValueError, match="spread"):
        Trainer(cfg, show_progress=False).run()
