"""Polyp-free samples: crops mined clear of the polyp and the scope border, and folders."""

from __future__ import annotations

import itertools

import cv2
import numpy as np
import pytest

from training.data.datasets import open_dataset
from training.data.loader import ImageCache
from training.data.negatives import (
    MiningSettings,
    folder_negatives,
    largest_free_rectangle,
    mine_crop,
    mined_negatives,
    polyp_region,
    scope_view,
)

from .synthetic import write_kvasir_like, write_mask_folder


def _brute_force_best(free: np.ndarray, max_aspect: float) -> int:
    rows, cols = free.shape
    best = 0
    for y1, y2 in itertools.combinations(range(rows + 1), 2):
        for x1, x2 in itertools.combinations(range(cols + 1), 2):
            h, w = y2 - y1, x2 - x1
            if max(h / w, w / h) <= max_aspect and free[y1:y2, x1:x2].all():
                best = max(best, h * w)
    return best


@pytest.mark.parametrize("seed", range(12))
def test_largest_free_rectangle_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    free = rng.random((7, 9)) < 0.75
    rect = largest_free_rectangle(free, max_aspect=2.0)
    best = _brute_force_best(free, 2.0)
    if best == 0:
        assert rect is None
        return
    x1, y1, x2, y2 = rect
    assert free[y1:y2, x1:x2].all()
    assert max((x2 - x1) / (y2 - y1), (y2 - y1) / (x2 - x1)) <= 2.0
    assert (x2 - x1) * (y2 - y1) == best


def test_mined_crops_never_touch_the_grown_mask_or_the_border(tmp_path):
    """Random frames with a black octagonal border and one to three polyps: every mined
    crop lies inside the view and shares no pixel with the dilated mask."""
    root = write_mask_folder(tmp_path / "cvc", n=20, seed=3, size=(240, 300))
    index = open_dataset(root)
    settings = MiningSettings()
    mined = 0
    for s in index.samples:
        image = cv2.imread(str(s.image_path))
        h, w = image.shape[:2]
        cut = 50
        octagon = np.array([[cut, 0], [w - cut, 0], [w, cut], [w, h - cut], [w - cut, h], [cut, h], [0, h - cut],
                            [0, cut]], np.int32)
        outside = np.full((h, w), 255, np.uint8)
        cv2.fillConvexPoly(outside, octagon, 0)
        image[outside > 0] = 0
        cv2.imwrite(str(s.image_path), image)
        rect = mine_crop(s, image, settings)
        if rect is None:
            continue
        mined += 1
        x1, y1, x2, y2 = rect
        grown = polyp_region(s, (h, w), settings.margin_fraction)
        assert not grown[y1:y2, x1:x2].any(), s.id
        # Independently of polyp_region: every crop pixel is at least the margin away from
        # every marked pixel of the mask file (Euclidean distance transform).
        polyp = cv2.imread(str(s.mask_path), cv2.IMREAD_GRAYSCALE) >= 128
        distance = cv2.distanceTransform((~polyp).astype(np.uint8), cv2.DIST_L2, 5)
        assert distance[y1:y2, x1:x2].min() >= settings.margin_fraction * min(h, w) - 1, s.id
        assert scope_view(image)[y1:y2, x1:x2].all(), s.id
        assert min(x2 - x1, y2 - y1) >= settings.min_side_fraction * min(h, w)
    assert mined >= 10  # most frames have room for a crop


def test_mined_negatives_are_samples_without_boxes_that_the_cache_crops(tmp_path):
    root = write_kvasir_like(tmp_path / "kv", n=8, size=(240, 300))
    index = open_dataset(root)
    negatives = mined_negatives(index.samples)
    assert negatives and all(n.is_negative and n.id.endswith("#background") and n.crop for n in negatives)
    cache = ImageCache(negatives, 64)
    for i, n in enumerate(negatives):
        x1, y1, x2, y2 = n.crop
        item = cache[i]
        assert len(item.boxes) == 0 and max(item.image.shape[:2]) == 64
        assert n.frame_hw == (y2 - y1, x2 - x1)


def test_a_frame_filled_by_its_polyp_gives_no_crop(tmp_path):
    root = write_kvasir_like(tmp_path / "kv", n=1, size=(100, 100))
    s = open_dataset(root).samples[0]
    from dataclasses import replace
    whole = replace(s, boxes=np.array([[5, 5, 95, 95]], np.float32), mask_path=None)
    assert mine_crop(whole, cv2.imread(str(s.image_path))) is None


def test_folder_negatives_reads_every_frame_and_names_the_broken_one(tmp_path):
    folder = tmp_path / "normal"
    (folder / "procedure2").mkdir(parents=True)
    cv2.imwrite(str(folder / "a.png"), np.full((50, 60, 3), 90, np.uint8))
    cv2.imwrite(str(folder / "procedure2" / "b.jpg"), np.full((40, 30, 3), 90, np.uint8))
    (folder / "broken.jpg").write_bytes(b"not an image")
    samples, problems = folder_negatives(folder)
    assert [s.id for s in samples] == ["a.png", "procedure2/b.jpg"]
    assert all(s.is_negative for s in samples) and samples[1].size == (40, 30)
    assert len(problems) == 1 and "broken.jpg" in str(problems[0]) and problems[0].skipped
    with pytest.raises(FileNotFoundError, match="no such folder"):
        folder_negatives(tmp_path / "missing")


def test_a_dark_lumen_inside_the_view_is_not_border():
    image = np.full((200, 240, 3), (60, 70, 160), np.uint8)
    image[:, :20] = 0                                  # the scope's black border, at the edge
    cv2.circle(image, (140, 100), 30, (5, 5, 5), -1)   # a dark lumen in the middle of the view
    view = scope_view(image)
    assert not view[:, :18].any() and view[100, 140] and view[100, 60]
