"""Plan C's rule as a command (``python -m training.release.candidate``): the candidate
replaces the default only when it is no worse on all four figures, scored as ``val``
scores them."""

from __future__ import annotations

import json

import pytest
import torch

from app.cli import main as polypscope
from models import create, save_checkpoint
from training.release.candidate import FIGURES, main, verdict

from .synthetic import write_kvasir_like, write_mask_folder

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


@pytest.fixture(scope="module")
def scored(tmp_path_factory):
    root = tmp_path_factory.mktemp("candidate")
    data = write_kvasir_like(root / "kv", n=16)
    zoom = write_mask_folder(root / "zoom", n=5)
    weights = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        weights.append(save_checkpoint(root / f"m{seed}.safetensors",
                                       create("yolov3-spp", width=0.125, input_size=64).eval()))
    return root, data, zoom, weights


def test_a_model_against_itself_gets_the_same_figures_and_they_are_vals(scored, capsys):
    root, data, zoom, (w0, _) = scored
    out = root / "self.json"
    assert main(["--candidate", str(w0), "--default", str(w0), "--data", str(data), "--zoom-out", str(zoom),
                 "--img", "96", "--merge-iou", "0.6", "--json-out", str(out)]) == 0
    printed = capsys.readouterr().out
    result = json.loads(out.read_text())
    assert result["candidate"]["figures"] == result["default"]["figures"]
    assert result["candidate"]["gflops"] == result["default"]["gflops"] > 0
    # An untrained network never reaches recall 0.90 on val: without an operating point it
    # cannot replace anything, not even itself; with one, a tie replaces.
    reached = result["candidate"]["figures"][FRAMES] is not None
    assert result["verdict"]["replaces_default"] == reached
    assert ("The candidate replaces the default" if reached else "no operating point") in printed
    # The same figures as 'polypscope val' gives for the same settings, on val and on the zoom-out folder.
    val_json, zoom_json = root / "val.json", root / "zoom.json"
    for folder, target in ((data, val_json), (zoom, zoom_json)):
        assert polypscope(["val", "--weights", str(w0), "--data", str(folder), "--img", "96", "--merge-iou", "0.6",
                           "--bootstrap", "0", "--quiet", "--json-out", str(target)]) == 0
    val, zoomed = json.loads(val_json.read_text()), json.loads(zoom_json.read_text())
    figures = result["candidate"]["figures"]
    assert figures[AP50] == pytest.approx(val["ap50"]) and figures[AP] == pytest.approx(val["ap50_95"])
    assert figures[ZOOM] == pytest.approx(zoomed["ap50"])
    point = val["operating_points"]["recall_0.90"]
    if point["reached"]:
        assert figures[FRAMES] == round(point["frames_with_false_box"] * val["negative_frames"])
    else:
        assert figures[FRAMES] is None


def test_two_models_are_judged_by_their_own_figures(scored, capsys):
    root, data, zoom, (w0, w1) = scored
    out = root / "pair.json"
    assert main(["--candidate", str(w1), "--default", str(w0), "--data", str(data), "--zoom-out", str(zoom),
                 "--img", "64", "--json-out", str(out), "--markdown", str(root / "pair.md")]) == 0
    result = json.loads(out.read_text())
    assert result["verdict"] == verdict(result["candidate"]["figures"], result["default"]["figures"])
    assert result["candidate"]["figures"] != result["default"]["figures"]  # two different networks
    assert (root / "pair.md").read_text() in capsys.readouterr().out


def test_a_missing_checkpoint_is_named(scored, capsys):
    root, data, zoom, (w0, _) = scored
    with pytest.raises(SystemExit):
        main(["--candidate", str(root / "nope.safetensors"), "--default", str(w0), "--data", str(data),
              "--zoom-out", str(zoom)])
    assert "nope.safetensors: no such checkpoint" in capsys.readouterr().err
