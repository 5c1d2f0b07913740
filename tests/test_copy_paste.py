"""Copy-paste: cutouts follow the mask, pasted polyps get exact boxes clear of the others,
and the training pipeline pastes real training polyps into polyp-free frames."""

import numpy as np
import pytest

from training.data.augment.copy_paste import CLEARANCE, Cutout, CutoutBank, copy_paste, cutouts_from, paste
from training.data.augment.pipeline import LETTERBOX_COLOUR, AugmentConfig, Item
from training.data.datasets import open_dataset
from training.data.loader import ImageCache, TrainDataset

from .synthetic import write_kvasir_like


def _item(h=100, w=120, boxes=()):
    return Item(np.full((h, w, 3), 60, np.uint8), np.array(boxes, np.float32).reshape(-1, 4),
                np.zeros(len(boxes), np.int64))


def test_a_cutout_follows_the_mask_or_else_the_inscribed_ellipse():
    item = _item(boxes=[[10, 20, 50, 40]])
    item.image[20:40, 10:50] = 200
    mask = np.zeros((100, 120), np.uint8)
    mask[25:35, 15:45] = 255  # the polyp is smaller than its box
    mask[21, 11] = 60         # a JPEG speck under the readers' threshold (128) is no polyp
    (cut,) = cutouts_from(item, mask)
    assert cut.image.shape == (20, 40, 3) and cut.alpha.shape == (20, 40)
    assert cut.alpha.sum() == 10 * 30 and cut.alpha[5:15, 5:35].all()
    (faint,) = cutouts_from(item, np.full((100, 120), 60, np.uint8))  # nothing passes: the ellipse
    assert faint.alpha[10, 20] == 1 and faint.alpha[0, 0] == 0
    (oval,) = cutouts_from(item, None)
    assert oval.alpha[10, 20] == 1 and oval.alpha[0, 0] == 0 and oval.alpha[0, -1] == 0  # corners are outside
    assert 0.7 < oval.alpha.mean() < 0.85  # an ellipse fills pi/4 of its box
    assert cutouts_from(_item(boxes=[[5, 5, 6, 30]]), None) == []  # a sliver is no polyp


def test_a_pasted_polyp_gets_the_box_of_what_was_pasted():
    bright = Cutout(np.full((40, 40, 3), 250, np.uint8), np.ones((40, 40), np.float32))
    existing = [[0, 0, 50, 50]]
    for seed in range(20):
        rng = np.random.default_rng(seed)
        out = paste(_item(boxes=existing), bright, rng, (0.5, 0.5))
        assert out.image.shape == (100, 120, 3) and len(out.boxes) == 2 and out.labels.tolist() == [0, 0]
        x1, y1, x2, y2 = out.boxes[1]
        assert x2 - x1 == pytest.approx(20, abs=1) and y2 - y1 == pytest.approx(20, abs=1)
        changed = np.abs(out.image.astype(int) - 60).max(axis=2) >= 95  # at least half opaque
        ys, xs = np.nonzero(changed)
        assert (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1) == pytest.approx((x1, y1, x2, y2), abs=1)
        # Clear of the box already there, with the margin.
        assert x1 >= 50 + CLEARANCE or y1 >= 50 + CLEARANCE


def test_the_outline_is_pasted_turned_with_its_pixels_and_fades_out_at_the_box_edge():
    # An L-shaped polyp (bright) whose patch is blue where it is not polyp: however it is
    # turned and flipped, no blue may be pasted, and the patch edge must not show.
    alpha = np.zeros((40, 40), np.float32)
    alpha[:, :15] = 1
    alpha[25:, :] = 1
    image = np.zeros((40, 40, 3), np.uint8)
    image[...] = (255, 0, 0)
    image[alpha > 0] = (200, 200, 200)
    cut = Cutout(image, alpha, label=3)
    for seed in range(12):
        out = paste(_item(), cut, np.random.default_rng(seed), (1.0, 1.0))
        assert out.labels.tolist() == [3]  # the polyp keeps its class
        # Feathering lets the patch's edge show at under half opacity (blue minus red under
        # 128); a turn applied to the pixels but not the outline would paste solid blue.
        blue = (out.image[..., 0].astype(int) - out.image[..., 2].astype(int)) > 160
        assert not blue.any()
        x1, y1, x2, y2 = out.boxes[0].astype(int)
        grey = np.abs(out.image.astype(int) - 60).max(axis=2)
        ring = np.ones_like(grey, bool)
        ring[y1 - 3:y2 + 3, x1 - 3:x2 + 3] = False
        assert grey[ring].max() <= 3  # beyond 3 px of the box, the frame is untouched: no hard seam


def test_polyps_land_on_the_frame_not_on_padding_or_the_scope_border():
    cut = Cutout(np.full((20, 20, 3), 250, np.uint8), np.ones((20, 20), np.float32))
    pasted = 0
    for seed in range(20):
        item = _item()
        item.image[:, :40] = LETTERBOX_COLOUR  # letterbox padding on the left
        item.image[:, 80:] = 5                 # black scope border on the right
        out = paste(item, cut, np.random.default_rng(seed), (1.0, 1.0))
        if len(out.boxes):  # a place may not be found in ten tries; when pasted, on the mucosa
            pasted += 1
            x1, _, x2, _ = out.boxes[0]
            assert x1 >= 40 - 2 and x2 <= 80 + 2
    assert pasted >= 5


def test_nothing_is_pasted_where_it_cannot_be():
    big = Cutout(np.full((40, 40, 3), 250, np.uint8), np.ones((40, 40), np.float32))
    full = _item(boxes=[[0, 0, 120, 100]])  # no clear place
    assert paste(full, big, np.random.default_rng(0), (0.5, 0.5)) is full
    tiny = paste(_item(), big, np.random.default_rng(0), (0.01, 0.02))  # shrunk under 2 px
    assert len(tiny.boxes) == 0
    assert len(copy_paste(_item(), lambda rng: None, np.random.default_rng(0), (0.5, 0.5)).boxes) == 0


def test_training_pastes_real_polyps_into_polyp_free_frames(tmp_path):
    data = write_kvasir_like(tmp_path / "kv", n=9)
    index = open_dataset(data, "train")
    positives = [s for s in index.samples if len(s.boxes)]
    negative = _item(160, 200)
    cache = ImageCache(positives, 160)
    cache._store[len(positives)] = negative  # a polyp-free item after the positives
    cache.samples = positives + [positives[0]]
    cfg = AugmentConfig(mosaic=0.0, scale=0.0, translate=0.0, copy_paste=1.0, copy_paste_min=0.5,
                        copy_paste_max=0.6)
    dataset = TrainDataset(cache, 160, cfg, seed=0, positives=len(positives))
    dataset.fill()
    assert len(dataset.bank._made) == len(positives)
    # Every cutout was cut along its mask: opacity is 0 outside the polyp, not a rectangle.
    cuts = [c for i in range(len(positives)) for c in dataset.bank.cutouts(i)]
    assert cuts and all(c.alpha.min() == 0 for c in cuts if min(c.alpha.shape) > 6)
    pasted = [dataset[len(positives)][1] for _ in range(1)] + [
        dataset.augment(len(positives), np.random.default_rng(s)) for s in range(10)]
    assert all(len(it.boxes) >= 1 for it in pasted)  # the polyp-free frame now holds polyps
    off = TrainDataset(cache, 160, AugmentConfig(mosaic=0.0, scale=0.0, translate=0.0), seed=0,
                       positives=len(positives))
    assert off.bank is None and len(off.augment(len(positives), np.random.default_rng(0)).boxes) == 0


def test_the_bank_makes_its_cutouts_once(tmp_path):
    data = write_kvasir_like(tmp_path / "kv", n=6)
    positives = [s for s in open_dataset(data, "train").samples if len(s.boxes)]
    cache = ImageCache(positives, 64)
    bank = CutoutBank(cache.__getitem__, positives)
    first = bank.cutouts(0)
    assert bank.cutouts(0) is first and all(isinstance(c, Cutout) for c in first)
    assert bank.draw(np.random.default_rng(1)) is not None
    assert CutoutBank(cache.__getitem__, []).draw(np.random.default_rng(0)) is None


def test_a_mask_that_cannot_be_read_gives_the_ellipse_not_a_crash(tmp_path):
    import dataclasses

    data = write_kvasir_like(tmp_path / "kv", n=6)
    positives = [s for s in open_dataset(data, "train").samples if len(s.boxes)]
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    samples = [dataclasses.replace(positives[0], mask_path=broken)]
    cuts = CutoutBank(ImageCache(samples, 64).__getitem__, samples).cutouts(0)
    assert cuts and all(c.alpha.min() == 0 and c.alpha.max() == 1 for c in cuts)
    ellipse = cutouts_from(ImageCache(samples, 64)[0], None)
    assert all(np.array_equal(a.alpha, b.alpha) for a, b in zip(cuts, ellipse, strict=True))


def test_the_command_line_turns_it_on_inside_the_recipe(train_configs, tmp_path, capsys):
    import training.cli
    from app.cli import build_parser

    seen = train_configs
    args = build_parser().parse_args(["train", "--data", "d", "--out", str(tmp_path / "r"), "--copy-paste", "0.5"])
    assert training.cli.run_train(args) == 0
    aug = seen[0].augment
    assert aug.copy_paste == 0.5 and aug.zoom_out == AugmentConfig.other_scopes().zoom_out  # the rest as the recipe
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "--data", "d", "--copy-paste", "1.5"])
    assert "a probability must be in [0, 1]" in capsys.readouterr().err
