"""Our AP must agree with pycocotools on the same predictions (within 1e-3)."""

import contextlib
import io

import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from training.evaluation.metrics import ImageResult, average_precision, detection_metrics, iou_matrix


def random_results(seed: int, n_images: int = 40) -> list[ImageResult]:
    rng = np.random.default_rng(seed)
    results = []
    for _ in range(n_images):
        gts = []
        for _ in range(int(rng.integers(1, 4))):
            x, y = rng.uniform(0, 400, 2)
            w, h = rng.uniform(20, 200, 2)
            gts.append([x, y, x + w, y + h])
        gts = np.array(gts)
        preds, scores = [], []
        for g in gts:  # a jittered hit for most boxes, sometimes two
            for _ in range(int(rng.integers(0, 3))):
                jitter = rng.normal(0, 0.12, 4) * np.r_[g[2] - g[0], g[3] - g[1], g[2] - g[0], g[3] - g[1]]
                p = g + jitter
                preds.append([min(p[0], p[2] - 1), min(p[1], p[3] - 1), max(p[2], p[0] + 1), max(p[3], p[1] + 1)])
                scores.append(rng.uniform(0.2, 1.0))
        for _ in range(int(rng.integers(0, 4))):  # false positives
            x, y = rng.uniform(0, 400, 2)
            w, h = rng.uniform(10, 150, 2)
            preds.append([x, y, x + w, y + h])
            scores.append(rng.uniform(0.0, 0.7))
        results.append(ImageResult(np.array(preds).reshape(-1, 4), np.array(scores), gts))
    return results


def coco_eval(results: list[ImageResult]) -> np.ndarray:
    images, anns, dets = [], [], []
    for i, r in enumerate(results, start=1):
        images.append({"id": i, "height": 800, "width": 800})
        for g in r.gt_boxes:
            w, h = g[2] - g[0], g[3] - g[1]
            anns.append({"id": len(anns) + 1, "image_id": i, "category_id": 1, "bbox": [g[0], g[1], w, h],
                         "area": w * h, "iscrowd": 0})
        for p, s in zip(r.pred_boxes, r.scores):
            dets.append({"image_id": i, "category_id": 1, "bbox": [p[0], p[1], p[2] - p[0], p[3] - p[1]],
                         "score": float(s)})
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = {"images": images, "annotations": anns, "categories": [{"id": 1, "name": "polyp"}]}
        gt.createIndex()
        dt = gt.loadRes(dets)
        ev = COCOeval(gt, dt, "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev.stats


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ap_agrees_with_pycocotools(seed):
    results = random_results(seed)
    ours = detection_metrics(results, bootstrap_reps=0)
    stats = coco_eval(results)
    assert abs(ours["ap50_95"] - stats[0]) < 1e-3
    assert abs(ours["ap50"] - stats[1]) < 1e-3
    assert abs(ours["ap75"] - stats[2]) < 1e-3
    assert 0.05 < ours["ap50"] < 0.99  # a non-trivial case


def test_perfect_and_empty_predictions():
    gts = [np.array([[0, 0, 10, 10.0]]), np.array([[5, 5, 50, 50.0], [60, 60, 90, 90.0]])]
    perfect = [ImageResult(g.copy(), np.ones(len(g)), g) for g in gts]
    m = detection_metrics(perfect, bootstrap_reps=50)
    assert m["ap50"] == pytest.approx(1.0) and m["ap50_95"] == pytest.approx(1.0)
    assert m["f1"] == pytest.approx(1.0) and m["mean_iou"] == pytest.approx(1.0)
    assert m["ap50_ci95"] == [pytest.approx(1.0), pytest.approx(1.0)]
    empty = [ImageResult(np.zeros((0, 4)), np.zeros(0), g) for g in gts]
    assert detection_metrics(empty, bootstrap_reps=0)["ap50"] == 0.0


def test_jha_ap_averages_lower_thresholds():
    """A box with IoU 0.6 with its target counts at IoU 0.25..0.6 only."""
    g = np.array([[0, 0, 100, 100.0]])
    p = np.array([[0, 0, 100, 60.0]])  # IoU 0.6
    assert iou_matrix(p, g)[0, 0] == pytest.approx(0.6)
    m = detection_metrics([ImageResult(p, np.array([0.9]), g)], bootstrap_reps=0)
    assert m["ap50"] == pytest.approx(1.0)
    assert m["ap75"] == 0.0
    assert m["ap_jha"] == pytest.approx(8 / 11)  # thresholds .25,.30,...,.60 of .25..75
    assert m["ap50_95"] == pytest.approx(3 / 10)  # .50, .55, .60


def test_f1_operating_point():
    g = [np.array([[0, 0, 10, 10.0]]) for _ in range(4)]
    preds = [ImageResult(np.array([[0, 0, 10, 10.0], [50, 50, 60, 60.0]]), np.array([0.9, 0.95 if i == 0 else 0.1]), g[i])
             for i in range(4)]
    m = detection_metrics(preds, bootstrap_reps=0)
    # Best F1 keeps the four hits at 0.9 and the single 0.95 false positive: P = 4/5, R = 1.
    assert m["f1_threshold"] == pytest.approx(0.9)
    assert m["precision"] == pytest.approx(0.8) and m["recall"] == 1.0
    assert m["f1"] == pytest.approx(2 * 0.8 / 1.8)


def test_average_precision_no_ground_truth_is_nan():
    assert np.isnan(average_precision(np.array([0.5]), np.array([False]), 0))
