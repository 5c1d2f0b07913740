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
