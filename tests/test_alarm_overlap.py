"""Which polyp-free frames a model fires on (``val --false-alarms-out``), and which frames
several models share (``python -m training.evaluation.alarm_overlap``)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from app.cli import main
from models import create, save_checkpoint
from training.data.datasets import Sample
from training.evaluation.alarm_overlap import alarm_record, firing_frames, mcnemar_fewer, overlap
from training.evaluation.alarm_overlap import main as overlap_main
from training.evaluation.evaluate import ImageDetections
from training.evaluation.false_alarms import false_alarms

from .synthetic import write_kvasir_like


def _record(model: str, threshold: float, max_scores: dict[str, float]) -> dict:
    return {"model": model, "threshold": threshold, "reached": True, "floor": 0.05,
            "scored_as": {"data": "/d", "split": "val", "input_size": 352, "box_merge_iou": 0.6},
            "frames": [{"id": i, "image": f"{i}.jpg", "crop": None, "max_score": s, "boxes": []}
                       for i, s in max_scores.items()]}


def test_the_list_counts_exactly_what_the_false_alarm_figure_counts():
    """Thresholds between frames' scores and at an exact float32 tie: the list's firing
    frames are the frames ``false_alarms`` counts, one by one."""
    tie = float(np.float32(0.3))
    scores = [np.array([0.9, 0.2], np.float32), np.array([tie], np.float32), np.array([0.31, 0.01], np.float32),
              np.zeros(0, np.float32), np.array([0.04], np.float32)]
    negatives = [Sample(f"f{i}#background", Path(f"/img/f{i}.jpg"), np.zeros((0, 4), np.float32),
                        np.zeros(0, np.int64), crop=(8, 8, 72, 72)) for i in range(len(scores))]
    dets = [ImageDetections(np.tile([[1.0, 2.0, 30.0, 40.0]], (len(s), 1)), s, np.zeros(len(s), int)) for s in scores]
    for threshold in (0.0, 0.1, tie, 0.305, 0.95):
        record = alarm_record(negatives, dets, {"threshold": threshold, "reached": True}, "m", {})
        record = json.loads(json.dumps(record))  # as written and read back
        fired = firing_frames(record)
        figure = false_alarms(scores, threshold)
        assert len(fired) == round(figure.frames_with_false_box * figure.frames)
        assert fired == {f"f{i}#background" for i, s in enumerate(scores) if (s > np.float32(threshold)).any()}
    assert "f1#background" not in firing_frames(alarm_record(negatives, dets, {"threshold": tie, "reached": True},
                                                             "m", {}))  # a tie is not a false alarm
    low = alarm_record(negatives, dets, {"threshold": 0.01, "reached": False}, "m", {})
    assert low["floor"] == 0.01 and len(low["frames"][4]["boxes"]) == 1  # the floor never hides a firing box


def test_overlap_counts_each_frame_by_how_many_models_fire_on_it():
    a = _record("a", 0.2, {"f1": 0.9, "f2": 0.25, "f3": 0.1, "f4": 0.0})
    b = _record("b", 0.5, {"f1": 0.6, "f2": 0.4, "f3": 0.55, "f4": 0.0})  # another score scale
    c = _record("c", 0.1, {"f4": 0.0, "f3": 0.05, "f2": 0.3, "f1": 0.2})  # other order, same frames
    result = overlap([a, b, c])
    assert result["firing_per_model"] == [2, 2, 2]
    assert result["frames_by_models_firing"] == {1: 1, 2: 1, 3: 1}
    assert [(row["id"], row["models"]) for row in result["rows"]] == [
        ("f1", ["a", "b", "c"]), ("f2", ["a", "c"]), ("f3", ["b"])]
    assert result["rows"][0]["scores"] == [0.9, 0.6, 0.2]
    assert "paired" not in result


def test_two_lists_get_a_paired_comparison():
    first = _record("old", 0.2, {f"f{i}": 0.9 if i < 6 else 0.0 for i in range(10)})
    second = _record("new", 0.2, {f"f{i}": 0.9 if i in (0, 9) else 0.0 for i in range(10)})
    paired = overlap([first, second])["paired"]
    assert (paired["only_first"], paired["only_second"], paired["both"]) == (5, 1, 1)
    assert paired["p_second_fires_on_fewer"] == pytest.approx(7 / 64)  # P(X <= 1), X ~ Bin(6, 1/2)
    assert mcnemar_fewer(0, 0) == 1.0 and mcnemar_fewer(5, 0) == pytest.approx(1 / 32)


def test_lists_that_cannot_be_compared_are_refused(tmp_path, capsys):
    a = _record("a", 0.2, {"f1": 0.9, "f2": 0.25})
    with pytest.raises(ValueError, match="list different polyp-free frames"):
        overlap([a, _record("b", 0.2, {"f1": 0.9, "f9": 0.25})])
    recropped = _record("b", 0.2, {"f1": 0.9, "f2": 0.25})
    recropped["frames"][0]["crop"] = [0, 0, 64, 64]  # same ids, mined with other settings
    with pytest.raises(ValueError, match="list different polyp-free frames"):
        overlap([a, recropped])
    with pytest.raises(ValueError, match="a is listed twice"):
        overlap([a, a])
    other_split = _record("b", 0.2, {"f1": 0.9, "f2": 0.25})
    other_split["scored_as"]["split"] = "test"
    with pytest.raises(ValueError, match="scored on split 'test'"):
        overlap([a, other_split])
    pa, pb = tmp_path / "a.json", tmp_path / "b.json"
    pa.write_text(json.dumps(a))
    pb.write_text(json.dumps(_record("b", 0.2, {"f1": 0.9, "f9": 0.25})))
    assert overlap_main([str(pa), str(pb)]) == 2
    assert "list different polyp-free frames" in capsys.readouterr().err
    for bad in ("{}", json.dumps({"model": "m", "threshold": 0.1, "frames": [{"id": "x"}]}), "[1, 2]"):
        (tmp_path / "bad.json").write_text(bad)
        with pytest.raises(SystemExit, match="bad.json: not a false-alarm list"):
            overlap_main([str(tmp_path / "bad.json")])


def test_val_writes_the_list_its_false_alarm_figure_counts(tmp_path):
    torch.manual_seed(0)
    weights = save_checkpoint(tmp_path / "tiny.safetensors",
                              create("yolov3-spp", width=0.125, input_size=64).eval())
    data = write_kvasir_like(tmp_path / "kv", n=12)
    metrics_file, alarms_file = tmp_path / "m.json", tmp_path / "alarms.json"
    assert main(["val", "--weights", str(weights), "--data", str(data), "--quiet", "--bootstrap", "0",
                 "--json-out", str(metrics_file), "--false-alarms-out", str(alarms_file)]) == 0
    metrics = json.loads(metrics_file.read_text())
    record = json.loads(alarms_file.read_text())
    point = metrics["operating_points"]["recall_0.90"]
    assert record["threshold"] == point["threshold"] and record["reached"] == point["reached"]
    assert record["scored_as"] == {"data": metrics["data"], "split": "val", "input_size": 64, "box_merge_iou": None}
    assert len(record["frames"]) == metrics["negative_frames"] > 0
    assert len(firing_frames(record)) == round(point["frames_with_false_box"] * metrics["negative_frames"])
    boxes_checked = 0
    for frame in record["frames"]:
        scores = [b[4] for b in frame["boxes"]]
        assert all(s >= record["floor"] for s in scores)
        assert not scores or max(scores) == frame["max_score"]
        if frame["crop"] is not None:  # a mined crop's boxes lie in the crop's own pixels
            x1, y1, x2, y2 = frame["crop"]
            boxes = np.array([b[:4] for b in frame["boxes"]]).reshape(-1, 4)
            assert (boxes >= -0.1).all() and (boxes[:, [0, 2]] <= x2 - x1 + 0.1).all()
            assert (boxes[:, [1, 3]] <= y2 - y1 + 0.1).all()
            boxes_checked += len(boxes)
    assert boxes_checked > 0


def test_the_sheet_shows_the_frames_models_fire_on_and_a_moved_image_is_a_clear_error(tmp_path, capsys):
    import cv2

    image = tmp_path / "frame.png"
    cv2.imwrite(str(image), np.full((60, 80, 3), 128, np.uint8))
    frames = {"f1": 0.9, "f2": 0.1}
    a, b = _record("a", 0.2, frames), _record("b", 0.5, frames)
    for r in (a, b):
        for f in r["frames"]:
            f["image"], f["crop"] = str(image), [10, 0, 70, 60]
            f["boxes"] = [[5.0, 5.0, 30.0, 30.0, f["max_score"]]]
    files = []
    for r in (a, b):
        files.append(tmp_path / f"{r['model']}.json")
        files[-1].write_text(json.dumps(r))
    sheet = tmp_path / "sheet.png"
    assert overlap_main([*map(str, files), "--sheet", str(sheet)]) == 0
    assert "(1 frames)" in capsys.readouterr().out  # f1 only: f2 is under both thresholds
    assert cv2.imread(str(sheet)) is not None
    image.unlink()
    assert overlap_main([*map(str, files), "--sheet", str(sheet)]) == 2
    assert "frame.png" in capsys.readouterr().err
