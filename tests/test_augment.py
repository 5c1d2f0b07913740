"""Augmentation must keep every box on its polyp: augment image and mask together and
compare the boxes with the connected components of the augmented mask."""

import cv2
import numpy as np
import pytest

from training.data.augment.pipeline import (
    LETTERBOX_COLOUR,
    AugmentConfig,
    Augmenter,
    Item,
    flip_lr,
    flip_ud,
    glare,
    letterbox,
    mosaic,
    off_frame,
    random_affine,
    rotate90,
    scope_border,
)
from training.evaluation.metrics import iou_matrix

from .synthetic import draw_sample


def make_item(seed: int, h=150, w=190) -> Item:
    """An item whose mask labels each polyp with its own id (seed*3 + 1, + 2, ...), so
    polyps that end up touching (mosaic seams) stay distinguishable."""
    image, mask, boxes = draw_sample(np.random.default_rng(seed), h, w, max_polyps=2)
    instances = np.zeros_like(mask)
    for k, (x1, y1, x2, y2) in enumerate(boxes):
        region = instances[y1:y2, x1:x2]
        region[mask[y1:y2, x1:x2] > 0] = (seed % 80) * 3 + k + 1
    return Item(image, np.asarray(boxes, np.float32), np.zeros(len(boxes), np.int64), instances)


def instance_boxes(mask: np.ndarray) -> np.ndarray:
    """Bounding box of each connected piece of each polyp id (a mosaic may show the same
    image twice, so one id can appear in two places)."""
    boxes = []
    for value in np.unique(mask[mask > 0]):
        count, _, stats, _ = cv2.connectedComponentsWithStats((mask == value).astype(np.uint8))
        boxes.extend((x, y, x + w, y + h) for x, y, w, h, _ in stats[1:count])
    return np.asarray(boxes, np.float32).reshape(-1, 4)


def assert_boxes_on_mask(item: Item, tol: float = 0.75):
    """Each box holds its visible polyp whole; a polyp that is wholly in view fits its box
    tightly (every edge within 1.5 px, IoU >= tol). A polyp cut by the image border keeps a box clipped at that
    border, which must still contain every visible pixel of it."""
    components = instance_boxes(item.mask)
    h, w = item.mask.shape
    for box in item.boxes:
        overlap = iou_matrix(box[None], components)[0]
        assert overlap.max() > 0, f"box {box} lies on no polyp"
        comp = components[overlap.argmax()]
        assert (comp[:2] >= box[:2] - 1.5).all() and (comp[2:] <= box[2:] + 1.5).all(), (box, comp)
        touches_border = comp[0] <= 0 or comp[1] <= 0 or comp[2] >= w or comp[3] >= h
        if not touches_border:
            assert np.abs(box - comp).max() <= 1.5, (box, comp)
            assert overlap.max() >= tol, (box, comp)


@pytest.mark.parametrize("op", [flip_lr, flip_ud, lambda it: rotate90(it, 1), lambda it: rotate90(it, 3)])
def test_exact_geometric_ops(op):
    item = make_item(0)
    out = op(item)
    assert_boxes_on_mask(out, tol=0.999)


def test_rotate90_matches_numpy():
    item = make_item(1)
    out = rotate90(item, 1)
    assert np.array_equal(out.image, np.rot90(item.image))


def test_letterbox_and_affine_keep_boxes_on_polyps():
    rng = np.random.default_rng(0)
    for seed in range(10):
        item = letterbox(make_item(seed), 128)
        assert item.image.shape == (128, 128, 3)
        assert_boxes_on_mask(item)
        out = random_affine(item, 128, rng, AugmentConfig(scale=0.5, translate=0.2))
        assert_boxes_on_mask(out, tol=0.75)


def test_mosaic_keeps_boxes_on_polyps():
    rng = np.random.default_rng(3)
    for seed in range(10):
        items = [letterbox(make_item(seed * 4 + k), 128) for k in range(4)]
        out = mosaic(items, 128, rng)
        assert out.image.shape == (256, 256, 3)
        assert len(out.boxes) >= 1
        assert_boxes_on_mask(out, tol=0.75)


def test_full_pipeline_keeps_boxes_on_polyps():
    items = [make_item(s) for s in range(8)]
    aug = Augmenter(128, AugmentConfig(), lambda i: items[i], len(items))
    for k in range(30):
        out = aug(k % 8, np.random.default_rng(k))
        assert out.image.shape == (128, 128, 3)
        assert ((out.boxes >= 0) & (out.boxes <= 128)).all()
        assert_boxes_on_mask(out, tol=0.75)


def test_pipeline_is_reproducible():
    items = [make_item(s) for s in range(4)]
    aug = Augmenter(96, AugmentConfig(), lambda i: items[i], len(items))
    a = aug(1, np.random.default_rng((7, 2, 1)))
    b = aug(1, np.random.default_rng((7, 2, 1)))
    assert np.array_equal(a.image, b.image) and np.array_equal(a.boxes, b.boxes)


def _canvas_item(seed: int, h=150, w=190) -> Item:
    rng = np.random.default_rng(1000 + seed)
    image = np.clip(rng.normal((40, 50, 150), 12, (h, w, 3)), 0, 255).astype(np.uint8)
    return Item(image, np.zeros((0, 4), np.float32), np.zeros(0, np.int64))


def test_augmentation_for_other_scopes_keeps_boxes_on_polyps():
    """Zoom-out onto polyp-free canvases, colour casts, blur, glare and scope borders, all
    on: every box still frames its polyp (the mask moves with every step)."""
    items = [make_item(s) for s in range(8)]
    cfg = AugmentConfig(zoom_out=0.5, white_balance=0.1, gamma=0.25, blur=0.5, glare=0.5, border=0.7)
    canvases = [_canvas_item(s) for s in range(3)]
    aug = Augmenter(128, cfg, lambda i: items[i], len(items), canvas=lambda rng: canvases[int(rng.integers(0, 3))])
    for k in range(60):
        out = aug(k % 8, np.random.default_rng(k))
        assert out.image.shape == (128, 128, 3)
        assert_boxes_on_mask(out, tol=0.6)


def test_zoom_out_makes_polyps_small():
    items = [make_item(s) for s in range(8)]
    cfg = AugmentConfig(zoom_out=1.0, zoom_out_min=0.25, zoom_out_max=0.7)
    aug = Augmenter(128, cfg, lambda i: items[i], len(items), canvas=lambda rng: _canvas_item(0))
    fit = min(128 / 190, 128 / 150)  # the scale at which a whole frame would fill the input
    for k in range(24):
        out = aug(k % 8, np.random.default_rng(k))
        before = items[k % 8].boxes
        side = lambda b: np.maximum(b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]).max()  # noqa: E731
        assert side(out.boxes) <= 0.7 * fit * side(before) + 1.5
        assert side(out.boxes) >= 0.25 * fit * side(before) - 1.5
        assert_boxes_on_mask(out, tol=0.6)


def test_scope_border_never_covers_a_polyp():
    for seed in range(20):
        item = make_item(seed)
        out = scope_border(item, np.random.default_rng(seed))
        assert np.array_equal(out.boxes, item.boxes)
        assert np.array_equal(out.mask > 0, item.mask > 0)  # no polyp pixel was blacked out


def test_glare_lights_the_mucosa_never_the_padding_or_the_scope_border():
    """Specular highlights come from the light on wet tissue: the letterbox padding (which
    the runtime fills with a constant grey) and the black border never get one, even when
    the colour steps have moved the padding's grey before the glare step."""
    image = np.full((128, 128, 3), LETTERBOX_COLOUR, np.uint8)
    image[32:96, 16:112] = (60, 70, 160)   # mucosa, letterboxed between grey bars
    image[32:96, 16:24] = (5, 5, 5)        # a strip of black scope border
    on = ~off_frame(image)
    assert on.sum() == 64 * 88
    for seed in range(30):
        out = glare(Item(image.copy(), np.zeros((0, 4), np.float32), np.zeros(0, np.int64)),
                    np.random.default_rng(seed), on)
        assert np.array_equal(out.image[~on], image[~on]), seed
        assert (out.image[on].max(axis=1) > 200).any(), seed  # and a highlight did land on the mucosa
    # through the pipeline, with the colour steps on: the bars stay free of highlights
    item = Item(image, np.array([[60, 50, 80, 70]], np.float32), np.zeros(1, np.int64))
    cfg = AugmentConfig(glare=1.0, mosaic=0.0, scale=0.0, translate=0.0, flip_lr=0.0, flip_ud=0.0, rot90=0.0,
                        white_balance=0.1, gamma=0.25)
    aug = Augmenter(128, cfg, lambda i: item, 1)
    for seed in range(30):
        out = aug(0, np.random.default_rng(seed), use_mosaic=False)
        bars = np.r_[out.image[:32].reshape(-1, 3), out.image[96:].reshape(-1, 3)]
        assert (np.abs(bars.astype(int) - bars[0]) <= 1).all(), seed  # one flat colour: nothing painted on it
