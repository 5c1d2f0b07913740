import json

import cv2
import numpy as np
import pytest

from training.data.data_check import check_dataset
from training.data.datasets import DatasetError, boxes_from_mask, open_dataset

from .synthetic import draw_sample, write_kvasir_like


def test_kvasir_reader_and_splits(tmp_path):
    root = write_kvasir_like(tmp_path / "kv", n=12)
    full = open_dataset(root)
    assert full.format == "kvasir-seg" and len(full.samples) == 12 and not full.problems
    train = open_dataset(root, "train")
    assert [s.id for s in train.samples] == (root / "splits/train.txt").read_text().split()
    s = train.samples[0]
    assert s.boxes.dtype == np.float32 and s.boxes.shape[1] == 4 and s.size == (160, 200)
    with pytest.raises(DatasetError, match=r"splits/nope\.txt: no such split file \(available splits: \['test', 'train', 'val'\]\)"):
        open_dataset(root, "nope")


def test_mask_folder_reader_boxes_from_components(tmp_path):
    root = tmp_path / "cvc"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    rng = np.random.default_rng(0)
    truth = {}
    for i, suffix in enumerate([".png", ".tif", ".jpg"]):
        image, mask, boxes = draw_sample(rng, 120, 150, max_polyps=3)
        cv2.imwrite(str(root / "images" / f"{i}{suffix}"), image)
        cv2.imwrite(str(root / "masks" / f"{i}.png"), mask)
        truth[str(i)] = sorted(boxes)
    cv2.imwrite(str(root / "images" / "lonely.png"), image)           # no mask
    cv2.imwrite(str(root / "images" / "blank.png"), image)
    cv2.imwrite(str(root / "masks" / "blank.png"), np.zeros((120, 150), np.uint8))  # empty mask
    index = open_dataset(root)
    assert index.format == "image-mask folders"
    got = {s.id: sorted(map(tuple, s.boxes.astype(int).tolist())) for s in index.samples}
    assert got == {**truth, "blank": []}  # an empty mask is a polyp-free image, kept as a negative
    assert [s.id for s in index.negatives] == ["blank"] and len(index.positives) == 3
    skipped = {p.item: p.message for p in index.skipped}
    assert skipped == {"lonely": "no mask with this name in masks/"}


def test_boxes_from_mask_ignores_specks():
    mask = np.zeros((400, 400), np.uint8)
    mask[10:30, 20:50] = 255
    mask[380:382, 380:382] = 255  # a 4-pixel JPEG speck
    assert boxes_from_mask(mask).tolist() == [[20, 10, 50, 30]]


def test_yolo_reader(tmp_path):
    root = tmp_path / "yolo"
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    cv2.imwrite(str(root / "images" / "a.png"), np.zeros((100, 200, 3), np.uint8))
    (root / "labels" / "a.txt").write_text("0 0.5 0.5 0.2 0.4\n0 1.5 0.5 0.2 0.2\nbad line\n")
    cv2.imwrite(str(root / "images" / "b.png"), np.zeros((100, 200, 3), np.uint8))  # no label file
    cv2.imwrite(str(root / "images" / "c.png"), np.zeros((100, 200, 3), np.uint8))
    (root / "labels" / "c.txt").write_text("")                                      # empty: no polyp
    cv2.imwrite(str(root / "images" / "d.png"), np.zeros((100, 200, 3), np.uint8))
    (root / "labels" / "d.txt").write_text("0 0.5 0.5 0 0.2\n")                    # only a bad line
    index = open_dataset(root)
    assert index.format == "yolo labels"
    np.testing.assert_allclose(index.samples[0].boxes, [[80.0, 30.0, 120.0, 70.0]], atol=1e-4)
    assert [s.id for s in index.samples] == ["a", "c"]
    assert [s.id for s in index.negatives] == ["c"]
    messages = [str(p) for p in index.problems]
    assert any("labels/a.txt:2: coordinates outside [0, 1]" in m for m in messages)
    assert any("labels/a.txt:3: not 'class cx cy w h'" in m for m in messages)
    assert ("SKIPPED labels/b.txt: label file missing (an empty label file marks a polyp-free image) (id b)"
            in messages)
    assert "SKIPPED labels/d.txt: no usable box (id d)" in messages


def test_unknown_folder_is_refused(tmp_path):
    with pytest.raises(DatasetError, match="not a dataset folder PolypScope knows"):
        open_dataset(tmp_path)
    with pytest.raises(DatasetError, match="no such dataset folder"):
        open_dataset(tmp_path / "missing")


def test_data_check_names_every_problem(tmp_path):
    root = write_kvasir_like(tmp_path / "kv", n=8)
    meta = json.loads((root / "kavsir_bboxes.json").read_text())
    ids = sorted(meta)
    (root / "images" / f"{ids[0]}.jpg").write_bytes(b"not a jpeg")              # unreadable image
    (root / "images" / f"{ids[1]}.jpg").unlink()                               # missing image
    meta[ids[2]]["bbox"][0]["xmax"] = 999                                      # box outside the image
    meta[ids[3]]["bbox"] = []                                                  # no box: a negative
    cv2.imwrite(str(root / "masks" / f"{ids[3]}.png"), np.zeros((160, 200), np.uint8))  # ... with an empty mask
    meta[ids[6]]["bbox"] = []                                                  # no box, but a marked mask
    meta[ids[5]]["bbox"][0]["xmax"] = meta[ids[5]]["bbox"][0]["xmin"]          # only a degenerate box
    cv2.imwrite(str(root / "masks" / f"{ids[4]}.png"), np.zeros((10, 10), np.uint8))  # wrong-size mask
    (root / "kavsir_bboxes.json").write_text(json.dumps(meta))
    report = check_dataset(root, show_progress=False)
    text = "\n".join(report["problems"])
    assert f"SKIPPED images/{ids[0]}.jpg: image cannot be decoded" in text
    assert f"SKIPPED images/{ids[1]}.jpg: image file missing" in text
    assert f"kavsir_bboxes.json[{ids[2]}]: box" in text and "outside the 200x160 image" in text
    assert f"SKIPPED kavsir_bboxes.json[{ids[5]}]: no usable box" in text
    assert f"masks/{ids[4]}.png: mask is 10x10, image 200x160" in text
    assert f"SKIPPED kavsir_bboxes.json[{ids[6]}]: empty box list, but masks/{ids[6]}.png marks a polyp" in text
    assert set(report["skipped"]) == {ids[0], ids[1], ids[5], ids[6]}
    assert report["negatives"] == 1 and report["images"] == 4  # ids[3] is kept as a polyp-free image
    assert sum(s["negatives"] for s in report["splits"].values()) == 1


def test_a_mask_of_specks_is_neither_a_polyp_nor_polyp_free(tmp_path):
    root = tmp_path / "cvc"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    cv2.imwrite(str(root / "images" / "speck.png"), np.full((400, 400, 3), 90, np.uint8))
    mask = np.zeros((400, 400), np.uint8)
    mask[5:7, 5:7] = 255
    cv2.imwrite(str(root / "masks" / "speck.png"), mask)
    index = open_dataset(root)
    assert not index.samples
    assert "neither a polyp box nor polyp-free" in str(index.skipped[0])
