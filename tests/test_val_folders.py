"""``val`` on any folder (issue 11): a held-out set from another centre comes without
split files, and is scored whole instead of refused."""

from __future__ import annotations

import json

import pytest
import torch

from app.cli import main
from models import create, save_checkpoint

from .synthetic import write_kvasir_like, write_mask_folder


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    torch.manual_seed(0)
    model = create("yolov3-spp", width=0.125, input_size=64).eval()
    return save_checkpoint(tmp_path_factory.mktemp("weights") / "tiny.safetensors", model)


def test_a_folder_without_splits_is_scored_whole(weights, tmp_path, capsys):
    data = write_mask_folder(tmp_path / "other-centre", n=5)
    out = tmp_path / "m.json"
    assert main(["val", "--weights", str(weights), "--data", str(data), "--quiet", "--bootstrap", "0",
                 "--json-out", str(out)]) == 0
    captured = capsys.readouterr()
    assert "has no splits/ folder: scoring every image" in captured.err
    assert "on all images (5 images" in captured.out
    metrics = json.loads(out.read_text())
    assert metrics["split"] is None and metrics["images"] == 5


def test_a_folder_with_splits_scores_val_by_default_and_an_asked_split_must_exist(weights, tmp_path, capsys):
    data = write_kvasir_like(tmp_path / "kv", n=12)
    assert main(["val", "--weights", str(weights), "--data", str(data), "--quiet", "--bootstrap", "0"]) == 0
    assert " on val (" in capsys.readouterr().out
    plain = write_mask_folder(tmp_path / "plain", n=3)
    assert main(["val", "--weights", str(weights), "--data", str(plain), "--split", "test", "--quiet"]) == 1
    assert "no such split file" in capsys.readouterr().err


def test_the_review_sheet_draws_the_frames_the_figures_count(weights, tmp_path, capsys, monkeypatch):
    import training.evaluation.evaluate as evaluate

    runs = []
    real = evaluate.run_inference
    monkeypatch.setattr(evaluate, "run_inference", lambda *a, **k: runs.append(1) or real(*a, **k))
    data = write_kvasir_like(tmp_path / "kv", n=12)
    sheet, out = tmp_path / "sheet.png", tmp_path / "m.json"
    assert main(["val", "--weights", str(weights), "--data", str(data), "--quiet", "--bootstrap", "0",
                 "--json-out", str(out), "--review-sheet", str(sheet)]) == 0
    printed = capsys.readouterr().out
    metrics = json.loads(out.read_text())
    point = metrics["operating_points"]["recall_0.90"]
    assert metrics["negative_frames"] > 0 and sheet.stat().st_size > 0
    # The sheet's count of polyp-free frames with a box is the figure's (same detections, one run).
    alarmed = round(point["frames_with_false_box"] * metrics["negative_frames"])
    assert alarmed > 0  # an untrained network fires on these frames: the count is not trivially 0
    assert f"({alarmed} polyp-free frames with a box" in printed
    assert len(runs) == 2  # the split and its polyp-free frames, once each: the sheet reuses them
