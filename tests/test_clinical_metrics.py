"""False alarms on polyp-free frames, the recall operating point and AP by polyp size,
each on a case small enough to work out by hand."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from engine.postprocess import DEFAULT_CONF, DEFAULT_IOU
from training.evaluation.evaluate import EVAL_NMS_IOU, clinical_metrics
from training.evaluation.false_alarms import false_alarms, threshold_for_alarm_share, wilson_interval
from training.evaluation.metrics import ImageResult, ap_by_size, recall_at, recall_operating_point, threshold_below
from training.evaluation.validate import APP_DEFAULT_CONF

FRAMES = [np.array([0.9, 0.3]), np.array([]), np.array([0.2]), np.array([0.5])]


def test_false_alarm_figures_by_hand():
    at_025 = false_alarms(FRAMES, 0.25)
    assert at_025.frames == 4
    assert at_025.false_boxes_per_frame == pytest.approx(3 / 4)    # 0.9, 0.3 and 0.5
    assert at_025.frames_with_false_box == pytest.approx(2 / 4)    # the first and the last
    assert at_025.false_alarms_per_minute == pytest.approx(0.5 * 25 * 60)
    at_06 = false_alarms(FRAMES, 0.6)
    assert (at_06.false_boxes_per_frame, at_06.frames_with_false_box) == (0.25, 0.25)
    # As at run time, a box counts when its score is above the threshold, not at it.
    assert false_alarms(FRAMES, 0.5).false_boxes_per_frame == pytest.approx(1 / 4)
    with pytest.raises(ValueError, match="no polyp-free frames"):
        false_alarms([], 0.5)


def test_the_share_of_frames_with_a_box_has_a_wilson_interval():
    # 12 of 72 frames: centre (1/6 + z^2/144) / (1 + z^2/72), half-width worked out by hand.
    lo, hi = wilson_interval(12, 72)
    assert (lo, hi) == pytest.approx((0.0980, 0.2691), abs=2e-4)
    # No false alarm on 72 frames still allows about 5%: 72 frames cannot show a 2% bar is met.
    assert wilson_interval(0, 72) == pytest.approx((0.0, 0.0507), abs=2e-4)
    assert wilson_interval(1, 72) == pytest.approx((0.0025, 0.0746), abs=2e-4)
    assert wilson_interval(72, 72)[1] == pytest.approx(1.0)
    with pytest.raises(ValueError):
        wilson_interval(3, 2)
    assert false_alarms(FRAMES, 0.25).frames_with_false_box_ci95 == wilson_interval(2, 4)
    assert false_alarms(FRAMES, 0.25).as_dict()["frames_with_false_box_ci95"] == list(wilson_interval(2, 4))


def test_threshold_for_an_alarm_budget():
    t = threshold_for_alarm_share(FRAMES, 0.25)   # one frame of four may alarm
    assert t == pytest.approx(0.5) and false_alarms(FRAMES, t).frames_with_false_box == 0.25
    assert false_alarms(FRAMES, threshold_for_alarm_share(FRAMES, 0.0)).frames_with_false_box == 0.0
    assert threshold_for_alarm_share(FRAMES, 1.0) == 0.0


def _box(x, y, s):
    return [x, y, x + s, y + s]


def _two_images() -> list[ImageResult]:
    """Four polyps; detections 0.9 hit, 0.8 miss, 0.7 hit, 0.6 hit, 0.4 hit."""
    a = ImageResult(np.array([_box(0, 0, 10), _box(50, 50, 10), _box(20, 20, 10)], float), np.array([0.9, 0.8, 0.7]),
                    np.array([_box(0, 0, 10), _box(20, 20, 10)], float))
    b = ImageResult(np.array([_box(0, 0, 10), _box(30, 30, 10)], float), np.array([0.6, 0.4]),
                    np.array([_box(0, 0, 10), _box(30, 30, 10)], float))
    return [a, b]


def test_recall_operating_point_is_the_strictest_threshold_reaching_the_target():
    results = _two_images()
    p75 = recall_operating_point(results, 0.75)
    # One float32 step below the reaching box's score: the runtime keeps scores ABOVE it.
    assert p75.threshold == threshold_below(0.6) and np.float32(0.6) > np.float32(p75.threshold)
    assert np.float32(p75.threshold) >= np.float32(0.6) - 1e-7
    assert (p75.reached, p75.recall, p75.precision) == (True, 0.75, 0.75)
    assert recall_at(results, p75.threshold) == (0.75, 0.75)  # what the runtime would keep
    p90 = recall_operating_point(results, 0.90)
    assert (p90.threshold, p90.recall, p90.precision) == (threshold_below(0.4), 1.0, 0.8)
    assert recall_operating_point(results, 0.5).threshold == threshold_below(0.7)
    alone = recall_operating_point(results[:1], 1.0)  # image a alone: 2 of 2 found at 0.7
    assert alone.reached and alone.threshold == threshold_below(0.7)
    beyond = recall_operating_point([ImageResult(np.array([_box(0, 0, 10)], float), np.array([0.5]),
                                                 np.array([_box(0, 0, 10), _box(40, 40, 10)], float))], 0.9)
    assert not beyond.reached and beyond.recall == 0.5 and beyond.threshold == threshold_below(0.5)


def test_tied_scores_are_kept_or_dropped_together():
    r = ImageResult(np.array([_box(0, 0, 10), _box(30, 30, 10), _box(60, 60, 10)], float), np.array([0.9, 0.5, 0.5]),
                    np.array([_box(0, 0, 10), _box(30, 30, 10)], float))
    p = recall_operating_point([r], 1.0)
    assert p.threshold == threshold_below(0.5) and p.precision == pytest.approx(2 / 3)


def test_ap_by_size_ignores_the_other_sizes_as_coco_does():
    small_gt, large_gt = _box(10, 10, 5), _box(40, 40, 50)      # 0.25% and 25% of a 100 x 100 frame
    dets = np.array([_box(80, 0, 6), large_gt, small_gt, _box(0, 40, 40)], float)
    scores = np.array([0.95, 0.9, 0.8, 0.3])                     # small FP, large hit, small hit, large FP
    r = ImageResult(dets, scores, np.array([small_gt, large_gt], float), frame_area=100 * 100)
    by_size = ap_by_size([r])
    assert by_size["small"] == {"ap50": pytest.approx(0.5), "boxes": 1}   # the small FP ranks first
    assert by_size["large"] == {"ap50": pytest.approx(1.0), "boxes": 1}   # the large FP ranks after the hit
    assert by_size["medium"]["boxes"] == 0 and math.isnan(by_size["medium"]["ap50"])
    with pytest.raises(ValueError, match="frame area"):
        ap_by_size([ImageResult(dets, scores, np.array([small_gt], float))])


def test_ap_by_size_counts_a_duplicate_on_another_sizes_polyp_once_as_coco_does():
    # A large polyp (33 px square, 10.9% of the frame) found twice: first exactly, then by a
    # 30 px box inside it (9%, medium; IoU 0.83). The first match ignores the polyp for the
    # medium class; the duplicate then has nothing left to match and is a medium-sized false
    # positive, ranked above the medium polyp's own hit (0.7).
    large_gt, medium_gt = _box(0, 0, 33), _box(60, 60, 20)
    dets = np.array([large_gt, _box(1, 1, 30), medium_gt], float)
    r = ImageResult(dets, np.array([0.9, 0.8, 0.7]), np.array([large_gt, medium_gt], float), frame_area=100 * 100)
    by_size = ap_by_size([r])
    assert by_size["medium"] == {"ap50": pytest.approx(0.5), "boxes": 1}
    assert by_size["large"] == {"ap50": pytest.approx(1.0), "boxes": 1}  # the duplicate is not large: ignored


def test_clinical_metrics_report_false_alarms_at_each_operating_point():
    results = [ImageResult(r.pred_boxes, r.scores, r.gt_boxes, frame_area=100 * 100) for r in _two_images()]
    out = clinical_metrics(results, FRAMES, {"app default": 0.25})
    p90 = out["operating_points"]["recall_0.90"]
    assert p90["threshold"] == threshold_below(0.4) and p90["frames_with_false_box"] == pytest.approx(0.5)
    assert out["false_alarms_at"]["app default"]["false_boxes_per_frame"] == pytest.approx(0.75)
    assert out["negative_frames"] == 4 and "ap50_by_size" in out
    # A 2% budget on four frames allows none: the threshold sits at the highest false score.
    budget = out["alarm_budget"]
    assert budget["threshold"] == pytest.approx(0.9) and budget["frames_with_false_box"] == 0.0
    assert budget["recall"] == 0.0  # nothing scores above 0.9 in _two_images
    without = clinical_metrics(results, [], {})
    assert "recall_0.90" in without["operating_points"] and "false_alarms_at" not in without


def test_val_uses_the_runtime_defaults():
    """The threshold val reports at and the NMS IoU it suppresses with are the runtime's, so
    an operating threshold chosen by val holds for the boxes detect and the app keep."""
    assert APP_DEFAULT_CONF == DEFAULT_CONF and EVAL_NMS_IOU == DEFAULT_IOU


# -- the review sheet: what the operating point gets wrong, as pictures ------------------
def _random_results(seed: int = 0, images: int = 40):
    from training.evaluation.metrics import ImageResult

    rng = np.random.default_rng(seed)
    results = []
    for _ in range(images):
        gt = np.array([[40, 40, 120, 120], [200, 60, 260, 110]][: rng.integers(1, 3)], np.float32)
        preds, scores = [], []
        for box in gt:
            if rng.random() < 0.8:  # found, a little off, with some score
                preds.append(box + rng.normal(0, 4, 4).astype(np.float32))
                scores.append(rng.uniform(0.05, 0.95))
        preds.append(np.array([150, 150, 190, 190], np.float32))  # a stray box
        scores.append(rng.uniform(0.0, 0.6))
        results.append(ImageResult(np.array(preds, np.float32), np.array(scores, np.float32), gt, 320.0 * 320.0))
    return results


def test_the_polyps_the_sheet_calls_found_are_those_the_operating_point_counts():
    from training.evaluation.metrics import found_ground_truth, recall_operating_point
    from training.evaluation.review_sheet import missed_polyps

    results = _random_results()
    total = sum(len(r.gt_boxes) for r in results)
    for target in (0.5, 0.7):
        point = recall_operating_point(results, target)
        found = sum(int(found_ground_truth(r, point.threshold).sum()) for r in results)
        assert found / total == pytest.approx(point.recall)       # the same matching as the recall figure
        assert len(missed_polyps(results, point.threshold)) == total - found
    assert all(found_ground_truth(r, 1.0).sum() == 0 for r in results)  # nothing scores above 1


def test_the_sheet_counts_the_false_alarm_frames_the_figures_count(tmp_path):
    from training.data.datasets import Sample
    from training.evaluation.evaluate import ImageDetections
    from training.evaluation.false_alarms import false_alarms
    from training.evaluation.review_sheet import false_alarm_frames, save_review_sheet

    rng = np.random.default_rng(1)
    image = tmp_path / "frame.png"
    cv2.imwrite(str(image), rng.integers(0, 255, (240, 320, 3), dtype=np.uint8))
    negatives = [Sample(f"neg{i}", image, np.zeros((0, 4), np.float32), np.zeros(0, np.int64), crop=(0, 0, 160, 120))
                 for i in range(10)]
    dets = [ImageDetections(np.array([[10, 10, 50, 50]] * (i % 3), np.float32), rng.uniform(0, 0.5, i % 3).astype(np.float32),
                            np.zeros(i % 3, np.int64)) for i in range(10)]
    threshold = 0.2
    hits = false_alarm_frames(dets, threshold)
    assert len(hits) == round(false_alarms([d.scores for d in dets], threshold).frames_with_false_box * 10)
    assert [h[1] for h in hits] == sorted((h[1] for h in hits), reverse=True)
    results = _random_results(images=3)
    samples = [Sample(f"pos{i}", image, r.gt_boxes, np.zeros(len(r.gt_boxes), np.int64)) for i, r in enumerate(results)]
    counts = save_review_sheet(tmp_path / "sheet.png", threshold, negatives, dets, samples, results, "test")
    assert counts["false_alarm_frames"] == len(hits) and cv2.imread(str(tmp_path / "sheet.png")) is not None


def test_the_model_card_gives_the_false_alarm_share_with_its_interval():
    from training.release.model_card import clinical_section

    point = false_alarms([np.array([0.9])] * 12 + [np.array([])] * 60, 0.5).as_dict()
    val = {"negative_frames": 72, "false_alarms_at": {"operating threshold": point}}
    old = {"negative_frames": 72, "false_alarms_at": {"operating threshold": {  # a card made before intervals
        k: v for k, v in point.items() if k != "frames_with_false_box_ci95"}}}
    text = clinical_section({}, val, old, None)
    assert "| val | 72 | 16.7% (95% CI 9.8-26.9%) |" in text and "| test | 72 | 16.7% |" in text


def test_the_model_card_command_trains_the_recipe_it_describes():
    """The card's ``polypscope train`` line carries the changes adopted since the first recipe:
    parsed by the real command line, it asks for the run's recorded settings."""
    import dataclasses
    import shlex

    from app.cli import build_parser
    from training.data.augment.pipeline import AugmentConfig
    from training.loop.trainer import TrainConfig
    from training.release.model_card import recipe_options

    augment = dataclasses.replace(AugmentConfig.other_scopes(), copy_paste=0.5, distractors=0.25)
    recipe = dataclasses.asdict(TrainConfig(data="d", augment=augment, multi_scale=0.5))
    options = recipe_options(recipe)
    args = build_parser().parse_args(["train", "--data", "d", *shlex.split(options)])
    assert (args.copy_paste, args.distractors, args.multi_scale) == (0.5, 0.25, 0.5)
    assert args.hard_crops is None  # off in the recipe, so not on the card's line
    assert recipe_options(dataclasses.asdict(TrainConfig(data="d"))) == ""


def test_the_model_card_names_the_epoch_that_shipped_not_only_the_best():
    from training.release.model_card import shipped_epoch_line

    rows = [{"epoch": "1", "val_ap50": "0.50"}, {"epoch": "2", "val_ap50": "0.90"}, {"epoch": "3", "val_ap50": "0.80"}]
    final = shipped_epoch_line({"epoch": 3, "shipped_from": "last.safetensors"}, rows)
    assert final.startswith("Shipped epoch: 3 of 3 (val AP50 0.8000")
    assert "best val AP50 0.9000 at epoch 2" in final and "last.safetensors" in final
    assert shipped_epoch_line({"epoch": 2}, rows).startswith("Shipped epoch: 2 of 3 (best val AP50 0.9000 at epoch 2")
    assert shipped_epoch_line({}, rows).startswith("Shipped epoch: 2 of 3 (best")  # no epoch recorded: the best
    late = shipped_epoch_line({"epoch": 1}, rows[1:])  # a log that starts after the shipped epoch
    assert late.startswith("Shipped epoch: 1 of 3 (no val in the run's log; best val AP50 0.9000 at epoch 2")
