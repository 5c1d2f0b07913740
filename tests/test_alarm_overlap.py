"""Which polyp-free frames a model fires on (``val --false-alarms-out``), and which frames
several models share (``python -m training.evaluation.alarm_overlap``)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from app.cli import main
from models import create, save_checkpoint
from training.evaluation.alarm_overlap import firing_frames, overlap
from training.evaluation.alarm_overlap import main as overlap_main

from .synthetic import write_kvasir_like


def _record(model: str, threshold: float, max_scores: dict[str, float]) -> dict:
    return {"model": model, "threshold": threshold, "floor": 0.05,
            "frames": [{"id": i, "image": f"{i}.jpg", "crop": None, "max_score": s, "boxes": []}
                       for i, s in max_scores.items()]}


def test_a_frame_fires_strictly_above_its_own_models_threshold():
    r = _record("a", 0.3, {"f1": 0.3, "f2": 0.31, "f3": 0.0})
    assert firing_frames(r) == {"f2"}  # 0.3 at threshold 0.3 is not a false alarm, as val counts it


def test_overlap_counts_each_frame_by_how_many_models_fire_on_it():
    a = _record("a", 0.2, {"f1": 0.9, "f2": 0.25, "f3": 0.1, "f4": 0.0})
    b = _record("b", 0.5, {"f1": 0.6, "f2": 0.4, "f3": 0.55, "f4": 0.0})  # another score scale
    c = _record("c", 0.1, {"f4": 0.0, "f3": 0.05, "f2": 0.3, "f1": 0.2})  # other order, same frames
    result = overlap([a, b, c])
    assert result["firing_per_model"] == {"a": 2, "b": 2, "c": 2}
    assert result["frames_by_models_firing"] == {1: 1, 2: 1, 3: 1}
    assert [(row["id"], row["models"]) for row in result["rows"]] == [
        ("f1", ["a", "b", "c"]), ("f2", ["a", "c"]), ("f3", ["b"])]
    assert result["rows"][0]["scores"] == {"a": 0.9, "b": 0.6, "c": 0.2}


def test_lists_of_different_frames_are_refused(tmp_path, capsys):
    a = _record("a", 0.2, {"f1": 0.9, "f2": 0.25})
    b = _record("b", 0.2, {"f1": 0.9, "f9": 0.25})
    with pytest.raises(ValueError, match="list different polyp-free frames"):
        overlap([a, b])
    pa, pb = tmp_path / "a.json", tmp_path / "b.json"
    pa.write_text(json.dumps(a))
    pb.write_text(json.dumps(b))
    assert overlap_main([str(pa), str(pb)]) == 2
    assert "list different polyp-free frames" in capsys.readouterr().err
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(SystemExit, match="bad.json: not a false-alarm list"):
        overlap_main([str(tmp_path / "bad.json")])


def test_val_writes_the_list_its_false_alarm_figure_counts(tmp_path, capsys):
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
    assert record["threshold"] == pytest.approx(point["threshold"])
    assert len(record["frames"]) == metrics["negative_frames"] > 0
    fired = firing_frames(record)
    assert len(fired) > 0  # an untrained network fires on these frames: the match below is not 0 == 0
    assert len(fired) == round(point["frames_with_false_box"] * metrics["negative_frames"])
    for frame in record["frames"]:
        scores = [b[4] for b in frame["boxes"]]
        assert all(s >= record["floor"] for s in scores)
        assert not scores or max(scores) == pytest.approx(frame["max_score"], abs=1e-4)
        if frame["crop"] is not None:  # a mined crop's boxes lie in the crop's own pixels
            x1, y1, x2, y2 = frame["crop"]
            boxes = np.array([b[:4] for b in frame["boxes"]]).reshape(-1, 4)
            assert (boxes >= -0.1).all() and (boxes[:, [0, 2]] <= x2 - x1 + 0.1).all()
            assert (boxes[:, [1, 3]] <= y2 - y1 + 0.1).all()
    # The same model listed twice overlaps itself on every frame it fires on.
    result = overlap([record, {**record, "model": "again"}])
    assert result["frames_by_models_firing"] == {1: 0, 2: len(fired)}


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
