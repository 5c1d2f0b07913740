import cv2
import numpy as np
import pytest

from engine.postprocess import postprocess
from engine.preprocess import Letterbox, Preprocessor


def test_letterbox_geometry_and_pixels():
    frame = np.zeros((100, 200, 3), np.uint8)
    frame[:, :, 2] = 255  # pure red in BGR
    prep = Preprocessor(64)
    tensor, box = prep(frame)
    assert tensor.shape == (1, 3, 64, 64) and tensor.dtype == np.float32
    assert (box.scale, box.left, box.top, box.width, box.height) == (0.32, 0, 16, 64, 32)
    # Channel 0 is R (RGB order), scaled to [0, 1]; padding is the grey 114.
    assert tensor[0, 0, 16:48].min() == 1.0 and tensor[0, 2, 16:48].max() == 0.0
    assert np.allclose(tensor[0, :, :16], 114 / 255) and np.allclose(tensor[0, :, 48:], 114 / 255)


def test_buffers_are_reused_and_geometry_tracks_frame_size():
    prep = Preprocessor(64)
    t1, b1 = prep(np.zeros((100, 200, 3), np.uint8))
    t2, b2 = prep(np.full((100, 200, 3), 255, np.uint8))
    assert t1 is t2 and b1 is b2
    _, b3 = prep(np.zeros((300, 100, 3), np.uint8))
    assert (b3.left, b3.top, b3.width, b3.height) == (21, 0, 21, 64)
    tensor, _ = prep(np.full((300, 100, 3), 255, np.uint8))
    assert np.allclose(tensor[0, :, :, :21], 114 / 255), "stale pixels from the previous geometry"


def test_large_frames_take_the_fast_two_step_resize_close_to_a_direct_area_resize():
    from engine.preprocess import decimation_factor

    assert decimation_factor(1024, 1280, 205, 256) == 4      # 1280x1024 -> 320x256 -> 256x205
    assert decimation_factor(1080, 1920, 144, 256) == 4      # 1920x1080 -> 480x270
    assert decimation_factor(641, 800, 205, 256) == 1        # odd height: direct resize
    assert decimation_factor(200, 256, 200, 256) == 1
    rng = np.random.default_rng(0)
    tissue = cv2.resize(rng.integers(30, 220, (64, 80, 3), dtype=np.uint8), (1280, 1024),
                        interpolation=cv2.INTER_CUBIC)
    tissue = cv2.add(tissue, rng.integers(0, 12, tissue.shape, dtype=np.uint8))  # fine texture too
    fast, box = Preprocessor(256)(tissue)
    exact, exact_box = Preprocessor(256, exact_area=True)(tissue)
    assert box == exact_box and (box.width, box.height) == (256, 205)
    rows = slice(box.top, box.top + box.height)
    diff = np.abs(fast[0, :, rows] - exact[0, :, rows]) * 255
    assert diff.mean() < 1.5 and diff.max() < 40
    assert not np.array_equal(fast, exact)  # really a different path
    odd = tissue[:1023]
    np.testing.assert_array_equal(Preprocessor(256)(odd)[0], Preprocessor(256, exact_area=True)(odd)[0])


def test_rejects_non_frames():
    with pytest.raises(ValueError, match="HxWx3 uint8 BGR"):
        Preprocessor(64)(np.zeros((10, 10), np.uint8))


def test_to_frame_inverts_the_letterbox():
    box = Letterbox.fit(1024, 1280, 256)
    frame_boxes = np.array([[100, 200, 400, 600], [0, 0, 1280, 1024]], np.float32)
    # cv2.resize maps the frame onto the rounded 256x205 area: per-axis scales.
    per_axis = np.array([box.width / 1280, box.height / 1024] * 2, np.float32)
    as_input = frame_boxes * per_axis + np.array([box.left, box.top] * 2, np.float32)
    np.testing.assert_allclose(box.to_frame(as_input), frame_boxes, atol=1e-3)


def _predictions(rows):
    return np.asarray(rows, np.float32)[None]


def test_postprocess_threshold_nms_and_scaling():
    box = Letterbox.fit(128, 256, 64)  # scale 0.25, top padding 16
    preds = _predictions([
        # x1, y1, x2, y2, obj, cls
        [10, 20, 30, 40, 0.9, 0.9],   # kept: score 0.81
        [11, 21, 31, 41, 0.8, 0.9],   # suppressed by the first (IoU ~0.9)
        [40, 30, 60, 50, 0.5, 0.6],   # kept: score 0.30
        [40, 30, 60, 50, 0.9, 0.2],   # score 0.18: below the threshold
    ])
    dets = postprocess(preds, box, conf=0.25, iou=0.45)
    assert len(dets) == 2
    np.testing.assert_allclose(dets.scores, [0.81, 0.30], rtol=1e-5)
    np.testing.assert_allclose(dets.boxes[0], [40, 16, 120, 96])  # (x / 0.25, (y - 16) / 0.25)
    assert dets.classes.tolist() == [0, 0]


def test_postprocess_is_class_aware():
    box = Letterbox.fit(64, 64, 64)
    preds = _predictions([[10, 10, 30, 30, 0.9, 0.9, 0.1], [10, 10, 30, 30, 0.9, 0.1, 0.8]])
    dets = postprocess(preds, box, conf=0.25, iou=0.45)
    assert sorted(dets.classes.tolist()) == [0, 1]
    assert len(postprocess(_predictions([[0, 0, 1, 1, 0.1, 0.1, 0.1]]), box)) == 0
