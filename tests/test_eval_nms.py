"""Validation and the runtime suppress the same way (issue 11: one NMS for both).

OpenCV's ``NMSBoxesBatched(top_k=k)`` keeps the k best raw boxes BEFORE suppressing.
Validation used it with k = 100, the runtime suppressed first: given a cluster of more
than 100 overlapping boxes around one polyp, validation lost every other object and the
two disagreed on the same network output.
"""

from __future__ import annotations

import numpy as np
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
