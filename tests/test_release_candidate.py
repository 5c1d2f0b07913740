"""Plan C's rule as a command (``python -m training.release.candidate``): the candidate
replaces the default only when it is no worse on all four figures, scored as ``val``
scores them, and never on a set made from test."""

from __future__ import annotations

import json

import pytest
import torch

from app.cli import main as polypscope
from models import create, save_checkpoint
from training.release.candidate import FIGURES, main, verdict

from .synthetic import write_kvasir_like

AP50, AP, FRAMES, ZOOM = (f.name for f in FIGURES)


def _figures(ap50, ap, frames, zoom):
    return {AP50: ap50, AP: ap, FRAMES: frames, ZOOM: zoom}


def test_the_candidate_must_be_no_worse_on_every_figure():
    default = _figures(0.93, 0.65, 4, 0.50)
    assert verdict(_figures(0.93, 0.65, 4, 0.50), default)["replaces_default"]  # a tie is not worse
    assert verdict(_figures(0.95, 0.66, 3, 0.51), default)["replaces_default"]  # fewer false-alarm frames is better
    worse = verdict(_figures(0.99, 0.70, 5, 0.60), default)  # better on three, one more false-alarm frame
    assert not worse["replaces_default"] and not worse["figures"][FRAMES]["no_worse"]
    assert [r["no_worse"] for r in worse["figures"].values()] == [True, True, False, True]
    assert not verdict(_figures(0.95, 0.66, 4, 0.4999), default)["replaces_default"]
    no_point = verdict(_figures(0.99, 0.70, None, 0.60), default)  # val recall never reached 0.90
    assert not no_point["replaces_default"]
    assert verdict(_figures(0.50, 0.30, 9, 0.20), _figures(0.40, 0.20, None, 0.10))["replaces_default"]


def _zoom_out_set(data, out, split="val"):
    assert polypscope(["data", "zoom-out", "--data", str(data), "--split", split, "--out", str(out), "--quiet"]) == 0
    return out


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    root = tmp_path_factory.mktemp("candidate")
    data = write_kvasir_like(root / "kv", n=16)
    weights = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        weights.append(save_checkpoint(root / f"m{seed}.safetensors",
                                       create("yolov3-spp", width=0.125, input_size=64).eval()))
    return root, data, _zoom_out_set(data, root / "zoom"), weights


def test_both_models_are_scored_alike_and_the_result_says_how(synthetic, capsys):
    root, data, zoom, (w0, w1) = synthetic
    out = root / "pair.json"
    assert main(["--candidate", str(w1), "--default", str(w0), "--data", str(data), "--zoom-out", str(zoom),
                 "--img", "64", "--json-out", str(out), "--markdown", str(root / "pair.md")]) == 0
    printed = capsys.readouterr().out
    result = json.loads(out.read_text())
    assert (root / "pair.md").read_text() == printed
    assert result["split"] == "val" and result["zoom_out"]["seed"] == 0
    for role in ("candidate", "default"):
        assert result[role]["box_merge"] == {"iou": 0.6, "score_ratio": 0.5}
        assert result[role]["gflops"] > 0 and result[role]["polyp_free_frames"] > 0
    assert result["candidate"]["polyp_free_frames"] == result["default"]["polyp_free_frames"]  # the same frames
    assert "| difference |" in printed and "GFLOPs" in printed


def test_sets_that_are_not_a_finished_zoom_out_of_val_are_refused(synthetic, tmp_path, capsys):
    root, data, zoom, (w0, _) = synthetic
    common = ["--candidate", str(w0), "--default", str(w0), "--data", str(data), "--img", "64"]
    test_set = _zoom_out_set(data, tmp_path / "from-test", split="test")
    with pytest.raises(SystemExit, match="made from test; the rule scores a set made from val only"):
        main([*common, "--zoom-out", str(test_set)])
    (tmp_path / "half").mkdir()
    with pytest.raises(SystemExit, match="not a finished zoom-out set"):
        main([*common, "--zoom-out", str(tmp_path / "half")])
    with pytest.raises(SystemExit):
        main([*common, "--zoom-out", str(zoom), "--candidate", str(root / "nope.safetensors")])
    assert "nope.safetensors: no such checkpoint" in capsys.readouterr().err


@pytest.mark.slow
def test_on_the_shipped_default_the_figures_are_vals_and_a_tie_replaces(kvasir, tmp_path, capsys):
    """Real figures (AP50 near 0.93, a few false-alarm frames, recall 0.90 reached): the
    command gives exactly what ``polypscope val`` gives for the same settings, and the
    default against itself is a tie, which replaces."""
    from safetensors import safe_open

    from tests.conftest import REPO
    from training.evaluation.box_merge import CHOSEN_IOU

    default = REPO / "assets" / "models" / "default.safetensors"
    with safe_open(str(default), "np") as shipped:  # scored as it ships, whatever default is shipped
        img = str(json.loads(shipped.metadata()["config"])["input_size"])
    merge = str(CHOSEN_IOU)
    zoom = _zoom_out_set(kvasir, tmp_path / "zoom")
    out = tmp_path / "self.json"
    assert main(["--candidate", str(default), "--default", str(default), "--data", str(kvasir),
                 "--zoom-out", str(zoom), "--img", img, "--merge-iou", merge, "--json-out", str(out)]) == 0
    assert "The candidate replaces the default" in capsys.readouterr().out
    result = json.loads(out.read_text())
    figures = result["candidate"]["figures"]
    assert figures == result["default"]["figures"] and result["verdict"]["replaces_default"]
    val_json, zoom_json = tmp_path / "val.json", tmp_path / "zoom.json"
    for folder, target in ((kvasir, val_json), (zoom, zoom_json)):
        assert polypscope(["val", "--weights", str(default), "--data", str(folder), "--img", img,
                           "--merge-iou", merge, "--bootstrap", "0", "--quiet", "--json-out", str(target)]) == 0
    val, zoomed = json.loads(val_json.read_text()), json.loads(zoom_json.read_text())
    point = val["operating_points"]["recall_0.90"]
    assert point["reached"] and val["ap50"] > 0.5  # figures that could disagree
    assert figures[AP50] == val["ap50"] and figures[AP] == val["ap50_95"] and figures[ZOOM] == zoomed["ap50"]
    assert figures[FRAMES] == round(point["frames_with_false_box"] * val["negative_frames"])
    assert result["candidate"]["threshold_recall_0.90"] == point["threshold"]
