"""``polypscope score``: an exported model scored through the runtime Detector."""

import json

from app.cli import main

from .synthetic import write_kvasir_like


def test_score_runs_the_exported_model_over_the_split(tiny_onnx, tmp_path, capsys):
    data = write_kvasir_like(tmp_path / "kv", n=10)
    out = tmp_path / "s.json"
    assert main(["score", "--model", str(tiny_onnx), "--data", str(data), "--split", "val", "--json-out", str(out)]) == 0
    result = json.loads(out.read_text())
    val_images = len((data / "splits" / "val.txt").read_text().split())
    assert result["images"] == val_images and result["backend"] == "onnxruntime-cpu"
    assert 0 <= result["ap50"] <= 1 and 0 <= result["ap50_95"] <= result["ap50"]
    assert f"on val ({val_images} images, onnxruntime-cpu): AP50" in capsys.readouterr().out
