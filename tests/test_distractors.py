"""Air bubbles and residue painted as background (``train --distractors P``): never on a
polyp, never in the scope's black border, and looking like what they stand for."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from training.data.augment.distractors import (
    BUBBLE_RADIUS,
    MARGIN,
    MIN_IN_VIEW,
    add_distractors,
    paint_bubble,
    paint_residue,
)
from training.data.augment.pipeline import LETTERBOX_COLOUR, AugmentConfig, Augmenter, Item


def _mucosa(h: int = 240, w: int = 320, seed: int = 0) -> np.ndarray:
    """A reddish frame with some texture, as the scope shows mucosa."""
    rng = np.random.default_rng(seed)
    base = np.empty((h, w, 3), np.float32)
    base[:] = (70, 90, 170)  # BGR
    base += cv2.GaussianBlur(rng.normal(0, 12, (h, w)).astype(np.float32), (0, 0), 3)[:, :, None]
    return np.clip(base, 0, 255).astype(np.uint8)


def test_polyps_keep_their_boxes_labels_mask_and_every_pixel_near_them():
    image = _mucosa()
    boxes = np.array([[40, 30, 120, 110], [200, 120, 260, 200]], np.float32)
    labels = np.array([0, 0])
    mask = np.zeros(image.shape[:2], np.uint8)
    mask[30:110, 40:120] = 255
    changed_frames = 0
    for seed in range(30):
        item = Item(image.copy(), boxes.copy(), labels.copy(), mask.copy())
        out = add_distractors(item, np.random.default_rng(seed))
        assert np.array_equal(out.boxes, boxes) and np.array_equal(out.labels, labels)
        assert np.array_equal(out.mask, mask)
        assert np.array_equal(item.image, image)  # the input is not painted on
        for x1, y1, x2, y2 in boxes.astype(int):  # the box grown by the margin
            g = MARGIN
            assert np.array_equal(out.image[y1 - g:y2 + g, x1 - g:x2 + g], image[y1 - g:y2 + g, x1 - g:x2 + g])
        changed_frames += not np.array_equal(out.image, image)
    assert changed_frames == 30  # with room beside the polyps, something is always painted


def test_a_polyp_whose_box_was_dropped_still_keeps_its_pixels():
    image = _mucosa()
    mask = np.zeros(image.shape[:2], np.uint8)
    mask[:, 100:220] = 255  # a polyp with no box (too little of it in view for one): its mask stays
    for seed in range(20):
        out = add_distractors(Item(image.copy(), np.zeros((0, 4), np.float32), np.zeros(0, int), mask.copy()),
                              np.random.default_rng(seed))
        assert np.array_equal(out.image[:, 100:220], image[:, 100:220])


def test_painting_outside_the_frame_is_refused():
    image = _mucosa(60, 60)
    with pytest.raises(ValueError, match="leaves the 60x60 frame"):
        paint_bubble(image, 5, 30, 8, np.random.default_rng(0))
    with pytest.raises(ValueError, match="leaves the 60x60 frame"):
        paint_residue(image, 30, 55, 8, np.random.default_rng(0))


def test_nothing_is_painted_in_the_scope_border_or_the_letterbox_padding():
    black = np.zeros((200, 200, 3), np.uint8)
    empty = np.zeros((0, 4), np.float32)
    for seed in range(10):
        assert np.array_equal(add_distractors(Item(black, empty, np.zeros(0, int)), np.random.default_rng(seed)).image,
                              black)
    padded = np.full((200, 200, 3), LETTERBOX_COLOUR, np.uint8)
    for seed in range(10):
        assert np.array_equal(add_distractors(Item(padded, empty, np.zeros(0, int)), np.random.default_rng(seed)).image,
                              padded)
    half = _mucosa(200, 320)
    half[:, :160] = 0  # the left half is the black border
    largest_side = 2 * (round(BUBBLE_RADIUS[1] * 200) + 2) + 1
    reach = int(np.ceil((1 - MIN_IN_VIEW) * largest_side)) + 1  # how far a square may hang into the border
    for seed in range(20):
        out = add_distractors(Item(half.copy(), empty, np.zeros(0, int)), np.random.default_rng(seed)).image
        cols = np.nonzero((out != half).any(axis=(0, 2)))[0]
        assert len(cols) == 0 or cols.min() >= 160 - reach


def test_a_bubble_is_a_round_lens_with_a_bright_rim():
    image = np.full((101, 101, 3), (60, 80, 160), np.uint8)
    image[:, ::6] = (40, 60, 130)  # stripes, to see the lens magnify them
    out = image.copy()
    paint_bubble(out, 50, 50, 20, np.random.default_rng(1))
    changed = (out.astype(int) - image).any(axis=2)
    ys, xs = np.nonzero(changed)
    assert xs.min() >= 50 - 22 and xs.max() <= 50 + 22 and ys.min() >= 50 - 22 and ys.max() <= 50 + 22
    # round: the changed region is as tall as it is wide, and fills about a disc's share of its square
    height, width = ys.max() - ys.min() + 1, xs.max() - xs.min() + 1
    assert abs(height - width) <= 2
    assert 0.65 < changed.sum() / (height * width) < 0.9  # a disc fills pi/4 = 0.785 of its square
    grey = out.astype(np.float32).mean(axis=2)
    yy, xx = np.mgrid[:101, :101]
    d = np.hypot(xx - 50, yy - 50)
    ring, centre = grey[(d > 14) & (d < 20)], grey[d < 6]
    assert grey[d < 20].max() > 220  # the specular spot is near white
    assert np.percentile(ring, 90) > image.astype(np.float32).mean() + 30
    assert centre.mean() < 200  # the middle stays see-through: mucosa under a lens, not a white disc


def test_a_residue_blob_is_yellow_brown_and_stays_in_its_square():
    image = np.full((81, 81, 3), (70, 90, 170), np.uint8)
    out = image.copy()
    paint_residue(out, 40, 40, 15, np.random.default_rng(2))
    changed = np.abs(out.astype(int) - image).sum(axis=2) > 30
    ys, xs = np.nonzero(changed)
    assert len(xs) > 100
    assert np.hypot(xs - 40, ys - 40).max() <= 15  # inside the circle of its square: no straight edge
    hsv = cv2.cvtColor(out, cv2.COLOR_BGR2HSV)[changed]
    glare = hsv[:, 1] < 60
    assert 8 <= np.median(hsv[~glare, 0]) <= 35  # OpenCV hue: yellow-brown, not the mucosa's red (~175)


@pytest.mark.parametrize("seed", range(3))
def test_the_augmenter_paints_them_only_when_asked(seed):
    image = _mucosa(320, 320, seed)
    boxes = np.array([[100, 100, 160, 170]], np.float32)
    plain = AugmentConfig(hsv_h=0, hsv_s=0, hsv_v=0, flip_lr=0, flip_ud=0, rot90=0, scale=0, translate=0, mosaic=0)
    item = Item(image, boxes, np.array([0]))

    def run(cfg: AugmentConfig) -> Item:
        return Augmenter(320, cfg, lambda i: item.copy(), 1)(0, np.random.default_rng(seed))

    off, on = run(plain), run(AugmentConfig(**{**plain.__dict__, "distractors": 1.0}))
    assert np.allclose(off.boxes, boxes) and np.allclose(on.boxes, boxes)
    assert not np.array_equal(on.image, off.image)
    assert np.array_equal(on.image[100:170, 100:160], off.image[100:170, 100:160])


def test_the_command_line_turns_it_on_inside_the_recipe(train_configs, tmp_path):
    import training.cli
    from app.cli import build_parser

    seen = train_configs
    args = build_parser().parse_args(["train", "--data", "d", "--out", str(tmp_path / "r"), "--distractors", "0.5"])
    assert training.cli.run_train(args) == 0
    aug = seen[0].augment
    assert aug.distractors == 0.5 and aug.glare == AugmentConfig.other_scopes().glare  # the rest as the recipe
    assert AugmentConfig.other_scopes().distractors == 0.0  # off by default until measured


def test_resume_keeps_the_saved_setting_and_says_the_flag_is_ignored(train_configs, tmp_path, capsys):
    import json

    from app.cli import main
    from training.loop.trainer import TrainConfig

    run = tmp_path / "run"
    run.mkdir()
    (run / "train_config.json").write_text(json.dumps(TrainConfig(data="d", out=str(run), epochs=5).to_dict()))
    assert main(["train", "--out", str(run), "--resume", "--distractors", "0.5"]) == 0
    assert "ignored: --distractors" in capsys.readouterr().err
    assert train_configs[0].augment.distractors == 0.0
