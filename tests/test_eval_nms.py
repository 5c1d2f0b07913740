"""Validation and the runtime suppress the same way (issue 11: one NMS for both).

OpenCV's ``NMSBoxesBatched(top_k=k)`` keeps the k best raw boxes BEFORE suppressing.
Validation used it with k = 100, the runtime suppressed first: given a cluster of more
than 100 overlapping boxes around one polyp, validation lost every other object and the
two disagreed on the same network output.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from engine.postprocess import postprocess as runtime_postprocess
from engine.preprocess import Letterbox
from training.evaluation.evaluate import postprocess as eval_postprocess

SIZE = 256


def _raw(cluster: int = 150, separate: int = 10, seed: int = 0) -> np.ndarray:
    """[1, N, 6] decoded rows (x1, y1, x2, y2, objectness, class prob): ``cluster``
    near-identical high-scoring boxes on one object, ``separate`` lower-scoring objects
    elsewhere that overlap nothing."""
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(cluster):
        x, y = 20 + rng.uniform(-1, 1, 2)
        rows.append([x, y, x + 60, y + 60, rng.uniform(0.8, 0.95), 1.0])
    for i in range(separate):
        x, y = 100 + (i % 5) * 30, 120 + (i // 5) * 60
        rows.append([x, y, x + 20, y + 20, 0.5 + 0.01 * i, 1.0])
    return np.asarray(rows, np.float32)[None]


def _boxes(dets) -> list[tuple[float, ...]]:
    return sorted(tuple(round(float(v), 3) for v in b) for b in dets)


def test_a_cluster_of_boxes_does_not_push_other_objects_out():
    raw = _raw()
    (found,) = eval_postprocess(torch.from_numpy(raw), conf=0.25, iou=0.45)
    assert len(found.boxes) == 11  # the cluster's best box and every separate object


def test_validation_and_runtime_keep_the_same_boxes_for_the_same_output():
    identity = Letterbox(1.0, 0, 0, SIZE, SIZE, SIZE, SIZE)
    for seed in range(5):
        raw = _raw(cluster=120 + 10 * seed, separate=5 + seed, seed=seed)
        (val,) = eval_postprocess(torch.from_numpy(raw), conf=0.25, iou=0.45)
        runtime = runtime_postprocess(raw, identity, conf=0.25, iou=0.45)
        assert _boxes(val.boxes) == _boxes(runtime.boxes)
        assert np.allclose(np.sort(val.scores), np.sort(runtime.scores))


@pytest.mark.parametrize("height, width, size", [(1080, 1920, 352), (1024, 1280, 352), (576, 720, 320),
                                                (1070, 1348, 352), (530, 622, 352), (529, 622, 320), (64, 80, 96)])
def test_validation_caches_the_pixels_the_runtime_feeds_the_network(height, width, size):
    """The threshold chosen on val holds at run time only if val scores the same pixels:
    every frame shape, the power-of-two area step of large camera frames included."""
    import cv2

    from engine.preprocess import Preprocessor
    from training.data.loader import resize_longest

    frame = cv2.GaussianBlur(np.random.default_rng(height).integers(0, 256, (height, width, 3), dtype=np.uint8),
                             (7, 7), 2)
    cached, _ = resize_longest(frame, np.zeros((0, 4), np.float32), size)
    tensor, box = Preprocessor(size)(frame)
    runtime = (tensor[0, ::-1].transpose(1, 2, 0) * 255).round().astype(np.uint8)  # RGB [0,1] -> BGR uint8
    inside = runtime[box.top:box.top + box.height, box.left:box.left + box.width]
    assert cached.shape == inside.shape
    assert np.array_equal(cached, inside)


def test_val_and_detect_give_the_same_boxes_on_the_same_images(tiny_checkpoint, tiny_onnx, tmp_path):
    """End to end: ``polypscope val`` (torch, training's letterbox and NMS) and ``polypscope
    detect`` (onnxruntime, the runtime's) on the same image files. Frames of the input's
    width need no resampling in either path, so both networks see identical pixels; with
    the same IoU, the boxes val keeps above the runtime's threshold are the runtime's boxes.
    Frames of odd sizes take a direct area resize in both paths; the two large even ones
    (256x320, 384x480) take the runtime's power-of-two area step first, as camera frames
    (1280x1024, 1920x1080, 720x576) do, and both paths map boxes back to frame pixels.
    Plain NMS only: with box merging every merge decision (an IoU against 0.6, a score
    against half another) would be a threshold that torch and onnxruntime could land on
    either side of; ``tests/test_box_merge.py`` checks merging on the same raw output."""
    import json
    import subprocess
    import sys

    import cv2

    from .conftest import REPO
    from .synthetic import draw_sample

    root = tmp_path / "frames"
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    rng = np.random.default_rng(4)
    sizes = [(72, 96), (131, 97), (97, 131), (151, 203), (77, 95), (203, 151), (256, 320), (384, 480)]
    for i, (h, w) in enumerate(sizes):
        image, _, boxes = draw_sample(rng, h, w, max_polyps=2)
        cv2.imwrite(str(root / "images" / f"{i}.png"), image)
        (root / "labels" / f"{i}.txt").write_text(
            "".join(f"0 {(a + c) / 2 / w} {(b + d) / 2 / h} {(c - a) / w} {(d - b) / h}\n" for a, b, c, d in boxes))
    conf = 0.2
    coco = tmp_path / "val.json"
    val = subprocess.run([sys.executable, "-m", "app", "val", "--weights", str(tiny_checkpoint), "--data", str(root),
                          "--coco-out", str(coco), "--bootstrap", "0", "--quiet"],
                         cwd=REPO, capture_output=True, text=True, timeout=300)
    assert val.returncode == 0, val.stderr
    log = tmp_path / "detect.jsonl"
    detect = subprocess.run([sys.executable, "-m", "app", "detect", str(root / "images"), "--model", str(tiny_onnx),
                             "--jsonl", str(log), "--conf", str(conf), "--no-persistence"],  # default NMS IoU
                            cwd=REPO, capture_output=True, text=True, timeout=300)
    assert detect.returncode == 0, detect.stderr
    by_val: dict[str, list] = {}
    for row in json.loads(coco.read_text()):
        if row["score"] > conf:
            x, y, w, h = row["bbox"]
            by_val.setdefault(row["file_name"], []).append((row["score"], [x, y, x + w, y + h]))
    found = 0
    for line in log.read_text().splitlines():
        row = json.loads(line)
        ours = sorted(zip(row["scores"], row["boxes"]), reverse=True)
        theirs = sorted(by_val.get(row["image"], []), reverse=True)
        assert len(ours) == len(theirs), row["image"]
        for (s_run, b_run), (s_val, b_val) in zip(ours, theirs):
            assert abs(s_run - s_val) < 1e-3 and np.abs(np.subtract(b_run, b_val)).max() < 0.05, row["image"]
        assert not any(abs(s - conf) < 1e-3 for s, _ in theirs)  # no box so close to the threshold that it is luck
        found += len(ours)
    assert found >= 3  # the comparison is not between two empty lists
