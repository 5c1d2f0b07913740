"""Zoom-out keeps boxes exact: the polyp lands inside its moved box, edge to edge."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from training.data.augment.pipeline import Item
from training.data.augment.zoom_out import paste_shrunk, zoom_out
from training.data.datasets import open_dataset
from training.evaluation.zoom_out_set import write_zoom_out_set

from .synthetic import write_kvasir_like

POLYP = (40, 200, 40)  # pure green: nowhere else in the picture


def _frame(h=200, w=240, box=(60, 50, 140, 110)) -> Item:
    image = np.full((h, w, 3), (60, 70, 160), np.uint8)
    x1, y1, x2, y2 = box
    image[y1:y2, x1:x2] = POLYP
    return Item(image, np.array([box], np.float32), np.zeros(1, np.int64))


def _green(image: np.ndarray) -> np.ndarray:
    return (image[:, :, 1] > 150) & (image[:, :, 0] < 90) & (image[:, :, 2] < 90)


@pytest.mark.parametrize("seed", range(6))
def test_the_moved_box_frames_the_shrunk_polyp(seed):
    rng = np.random.default_rng(seed)
    canvas = np.full((400, 480, 3), (90, 110, 190), np.uint8)
    out = zoom_out(_frame(), canvas, rng, (0.3, 0.6))
    assert out.image.shape == canvas.shape and len(out.boxes) == 1
    ys, xs = np.nonzero(_green(out.image))
    x1, y1, x2, y2 = out.boxes[0]
    # Every clearly green pixel is inside the box, and the box hugs them to within a pixel
    # (area resampling blends one pixel at each edge).
    assert xs.min() >= x1 - 1 and xs.max() + 1 <= x2 + 1 and ys.min() >= y1 - 1 and ys.max() + 1 <= y2 + 1
    assert abs(xs.min() - x1) <= 1.5 and abs(xs.max() + 1 - x2) <= 1.5
    assert abs(ys.min() - y1) <= 1.5 and abs(ys.max() + 1 - y2) <= 1.5
    # The polyp shrank by the drawn factor of the canvas fit (0.3 .. 0.6 of 2x = 0.6 .. 1.2).
    assert 0.3 * 2 * 80 - 2 <= x2 - x1 <= 0.6 * 2 * 80 + 2


def test_the_black_border_becomes_transparent():
    item = _frame()
    item.image[:, :20] = 0  # a black border strip on the left
    canvas = np.full((200, 240, 3), (90, 110, 190), np.uint8)
    out = paste_shrunk(canvas, item, 0.5, 10, 10)
    assert not (out.image.max(axis=2) < 24).any()  # no black pixel reached the canvas
    with pytest.raises(ValueError, match="does not fit"):
        paste_shrunk(canvas, item, 1.0, 100, 100)


def test_the_written_set_reads_back_with_the_same_boxes(tmp_path):
    root = write_kvasir_like(tmp_path / "kv", n=6, size=(240, 300))
    samples = open_dataset(root).samples
    manifest = write_zoom_out_set(samples, tmp_path / "zoom", seed=1)
    # Written again into the same folder: an earlier set's frames go, the user's files stay.
    recorded = json.loads((tmp_path / "zoom" / "zoom_out.json").read_text())
    recorded["images"]["old"] = {}  # a frame of an earlier set that the new one does not make
    (tmp_path / "zoom" / "zoom_out.json").write_text(json.dumps(recorded))
    (tmp_path / "zoom" / "images" / "old.png").write_bytes(b"from an earlier set")
    (tmp_path / "zoom" / "notes.txt").write_text("the user's")
    again = write_zoom_out_set(samples, tmp_path / "zoom", seed=1)
    assert manifest == again  # deterministic for a seed
    assert not (tmp_path / "zoom" / "images" / "old.png").exists() and (tmp_path / "zoom" / "notes.txt").is_file()
    with pytest.raises(ValueError, match="not a zoom-out set"):  # --out pointed at the dataset by mistake
        write_zoom_out_set(samples, root, seed=1)
    assert len(list((root / "images").iterdir())) == 6
    index = open_dataset(tmp_path / "zoom")
    assert index.format == "yolo labels" and len(index.samples) == len(manifest["images"]) >= 5
    for s in index.samples:
        np.testing.assert_allclose(s.boxes, manifest["images"][s.id]["boxes"], atol=1e-3 * max(s.size))
        assert manifest["images"][s.id]["canvas_from"] != s.id  # mucosa from another frame
        original = next(o for o in samples if o.id == s.id)
        assert s.size == original.size
        shrink = (s.boxes[:, 2] - s.boxes[:, 0]).sum() / (original.boxes[:, 2] - original.boxes[:, 0]).sum()
        assert 0.3 - 0.02 <= shrink <= 0.6 + 0.02
        assert cv2.imread(str(s.image_path)) is not None


def test_training_zoom_out_is_built_unlike_the_evaluation_set():
    """Training pastes with a hard edge onto a sharp tiling of four polyp-free crops; the
    evaluation set feathers its paste onto one stretched crop."""
    from training.data.augment.zoom_out import tiled_canvas

    tiles = [Item(np.full((60, 80, 3), 40 * (k + 1), np.uint8), np.zeros((0, 4), np.float32), np.zeros(0, np.int64))
             for k in range(4)]
    canvas = tiled_canvas(tiles, 64)
    assert canvas.shape == (64, 64, 3)
    assert [int(canvas[y, x, 0]) for x, y in ((5, 5), (40, 5), (5, 40), (40, 40))] == [40, 80, 120, 160]
    background = np.full((200, 240, 3), (90, 110, 190), np.uint8)
    hard = paste_shrunk(background, _frame(), 0.5, 20, 30, feather=0.0)
    soft = paste_shrunk(background, _frame(), 0.5, 20, 30)
    assert np.array_equal(hard.boxes, soft.boxes)
    # The pasted frame's own colour reaches its very edge only without feathering.
    edge = (slice(30, 130), 20)
    assert np.array_equal(hard.image[edge], np.broadcast_to(np.array([60, 70, 160], np.uint8), (100, 3)))
    assert not np.array_equal(soft.image[edge], hard.image[edge])


def test_the_command_writes_a_set_that_records_where_its_frames_came_from(tmp_path, capsys):
    from app.cli import main

    from .synthetic import write_kvasir_like

    data = write_kvasir_like(tmp_path / "kv", n=12)
    assert main(["data", "zoom-out", "--data", str(data), "--split", "val", "--out", str(tmp_path / "z"),
                 "--quiet"]) == 0
    assert "score it with: polypscope val" in capsys.readouterr().out
    manifest = json.loads((tmp_path / "z" / "zoom_out.json").read_text())
    labels = sorted(p.stem for p in (tmp_path / "z" / "labels").iterdir())
    assert labels == sorted(manifest["images"]) and len(labels) > 0
    assert manifest["split"] == "val" and manifest["data"] == str(data.resolve())
