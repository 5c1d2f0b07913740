"""``training.release.ship`` end to end: what ships is the fp16 file that was scored, with its
operating threshold, its box merging and the size it runs at written where a reader of the
figures (model card, docs/*-metrics.json) can trace them."""

from __future__ import annotations

import json
import sys

import pytest

from .engine_fixtures import make_checkpoint
from .synthetic import write_kvasir_like


def test_ship_scores_what_it_ships_and_says_how(tmp_path, monkeypatch):
    from models import load_checkpoint
    from training.release import ship

    data = write_kvasir_like(tmp_path / "kv", n=24)
    source = make_checkpoint(tmp_path / "tiny.safetensors")
    out, report = tmp_path / "shipped.safetensors", tmp_path / "metrics.json"
    monkeypatch.setattr(sys, "argv", ["ship", "--weights", str(source), "--out", str(out), "--data", str(data),
                                      "--json-out", str(report), "--img", "128"])
    ship.main()
    figures = json.loads(report.read_text())
    assert (figures["input_size"], figures["box_merge_iou"], figures["weights"]) == (128, 0.6, str(out))
    shipped = load_checkpoint(out)
    assert shipped.config.input_size == 128 and shipped.trained_input_size == 96
    from safetensors import safe_open

    with safe_open(str(out), "np") as f:  # fp16 on disk: the file scored is the file that ships
        assert f.get_tensor("backbone.stem.conv.weight").dtype == "float16"
    meta = shipped.metadata
    assert meta["operating_threshold"] == pytest.approx(figures["val"]["operating_points"]["recall_0.90"]["threshold"])
    assert meta["test_metrics"]["ap50"] == pytest.approx(figures["test"]["ap50"])
    assert meta["operating_point"]["chosen_on"] == "val" and meta["box_merge_iou"] == 0.6


def test_a_model_that_cannot_ship_leaves_the_shipped_file_as_it_was(tmp_path, monkeypatch):
    from training.release import ship

    data = write_kvasir_like(tmp_path / "kv", n=12)
    source = make_checkpoint(tmp_path / "tiny.safetensors", steps=5)
    out = tmp_path / "shipped.safetensors"
    out.write_bytes(b"the model shipped before")

    def never(val_metrics):  # val scored for real; then no operating point exists
        assert val_metrics["images"] > 0
        raise ship.NotShippable("val recall never reaches 0.9")

    monkeypatch.setattr(ship, "operating_point", never)
    monkeypatch.setattr(sys, "argv", ["ship", "--weights", str(source), "--out", str(out), "--data", str(data)])
    with pytest.raises(SystemExit, match="left as it was"):
        ship.main()
    assert out.read_bytes() == b"the model shipped before"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kv", "shipped.safetensors", "tiny.safetensors"]  # no staging left
