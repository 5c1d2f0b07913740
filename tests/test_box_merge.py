"""Box merging after NMS: the arithmetic on a hand-made case, validation and the runtime
merging alike, the runtime's boxes above its threshold being validation's, and the setting
travelling checkpoint -> ONNX -> Detector -> detect (docs/accuracy.md, "Box merging")."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from engine.detector import Detector
from engine.export import export_onnx
from engine.model_info import read_onnx_info
from engine.postprocess import check_merge, merge_boxes, pairwise_iou
from engine.postprocess import postprocess as runtime_postprocess
from engine.preprocess import Letterbox
from models import load_checkpoint, save_checkpoint
from training.evaluation.box_merge import BoxMerge
from training.evaluation.box_merge import merge_boxes as eval_merge_boxes
from training.evaluation.evaluate import postprocess as eval_postprocess

from .conftest import REPO
from .synthetic import write_moving_clip

SIZE = 256
IDENTITY = Letterbox(1.0, 0, 0, SIZE, SIZE, SIZE, SIZE)


def _hand_case() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    boxes = np.array([
        [10, 10, 50, 50],    # 0: kept, score 0.8
        [12, 10, 52, 50],    # 1: IoU 0.905 with 0, score 0.6 >= 0.5 x 0.8: merged in
        [10, 14, 50, 54],    # 2: IoU 0.818 with 0, score 0.2 < 0.4: too weak to move it
        [30, 10, 70, 50],    # 3: IoU 0.333 with 0: a neighbour, not the same polyp
        [11, 11, 51, 51],    # 4: the other class, IoU 0.905, score 0.7: not merged
        [100, 100, 120, 130],  # 5: kept, alone
    ], np.float32)
    scores = np.array([0.8, 0.6, 0.2, 0.7, 0.7, 0.5], np.float32)
    classes = np.array([0, 0, 0, 0, 1, 0])
    return boxes, scores, classes


def test_a_kept_box_moves_to_the_score_weighted_mean_of_its_strong_overlapping_neighbours():
    boxes, scores, classes = _hand_case()
    kept = np.array([0, 5])
    expected = np.array([[(0.8 * 10 + 0.6 * 12) / 1.4, 10, (0.8 * 50 + 0.6 * 52) / 1.4, 50],
                         [100, 100, 120, 130]])
    for merge in (merge_boxes, eval_merge_boxes):  # the runtime's numpy and validation's torch IoU
        assert np.allclose(merge(kept, boxes, scores, classes, 0.6, 0.5), expected, atol=1e-4)
    # a score ratio low enough lets box 2 in; an IoU above its overlap with box 1 leaves box 0 alone
    with_weak = merge_boxes(kept, boxes, scores, classes, 0.6, 0.2)[0]
    assert with_weak[3] == pytest.approx((0.8 * 50 + 0.6 * 50 + 0.2 * 54) / 1.6, abs=1e-4)
    assert np.allclose(merge_boxes(kept, boxes, scores, classes, 0.95, 0.5)[0], boxes[0])
    assert pairwise_iou(boxes[:1], boxes[1:2])[0, 0] == pytest.approx(1520 / 1680, abs=1e-6)
    flat = np.array([[5, 5, 25, 5]], np.float32)  # zero area: it overlaps nothing, itself included
    for merge in (merge_boxes, eval_merge_boxes):
        assert np.array_equal(merge(np.array([0]), flat, np.array([0.9], np.float32), np.array([0]), 0.6, 0.5), flat)


def _raw(seed: int) -> np.ndarray:
    """[1, N, 7] decoded rows (two classes): jittered clusters of boxes around a few objects
    plus scattered weak boxes, with scores spread from 0.01 to 0.95."""
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(6):
        x, y, w, h = rng.uniform(0, 180), rng.uniform(0, 180), rng.uniform(15, 70), rng.uniform(15, 70)
        cls = rng.integers(2)
        for _ in range(rng.integers(3, 25)):
            jx, jy, jw, jh = rng.normal(0, 4, 4).clip(-6, 6)
            probs = [0.9, 0.1] if cls == 0 else [0.15, 0.85]
            rows.append([x + jx, y + jy, x + w + jw, y + h + jh, rng.uniform(0.01, 0.95), *probs])
    for _ in range(40):
        x, y = rng.uniform(0, 230, 2)
        rows.append([x, y, x + rng.uniform(5, 25), y + rng.uniform(5, 25), rng.uniform(0.005, 0.3), 0.7, 0.3])
    return np.asarray(rows, np.float32)[None]


def _sorted(boxes: np.ndarray, scores: np.ndarray) -> list[tuple[float, ...]]:
    return sorted((round(float(s), 5), *(round(float(v), 3) for v in b)) for b, s in zip(boxes, scores))


@pytest.mark.parametrize(("conf", "ratio"), [(0.0015, 0.5), (0.1, 0.5), (0.25, 0.5), (0.4, 0.5), (0.25, 0.4)])
def test_the_runtime_keeps_above_its_threshold_exactly_the_merged_boxes_validation_keeps(conf, ratio):
    """Validation scores every candidate above 0.001; the runtime runs at its operating
    threshold (or, for ``score``, barely above validation's floor). With merging, each must
    still give the other's boxes above that threshold."""
    merge = BoxMerge(0.6, ratio)
    moved = 0
    for seed in range(8):
        raw = _raw(seed)
        (val,) = eval_postprocess(torch.from_numpy(raw), iou=0.45, merge=merge)
        above = val.scores > conf
        runtime = runtime_postprocess(raw, IDENTITY, conf=conf, iou=0.45, merge_iou=0.6, merge_score_ratio=ratio)
        clipped = val.boxes[above].clip(0, SIZE)  # the runtime clips to the frame, validation later
        assert _sorted(runtime.boxes, runtime.scores) == _sorted(clipped, val.scores[above])
        plain = runtime_postprocess(raw, IDENTITY, conf=conf, iou=0.45)
        assert _sorted(plain.boxes, plain.scores) != _sorted(runtime.boxes, runtime.scores) or not len(plain)
        assert np.allclose(np.sort(plain.scores), np.sort(runtime.scores))  # merging moves boxes, never scores
        moved += int(len(plain) > 0)
    assert moved >= 6  # the comparison is not between empty lists


def test_merge_settings_are_checked():
    assert check_merge(0, 0.5) == (None, 0.5)  # 0: off
    for bad in ((1.5, 0.5), (-0.1, 0.5), (0.6, 0.0), (0.6, 1.2)):
        with pytest.raises(ValueError, match="box merge"):
            check_merge(*bad)
        with pytest.raises(ValueError, match="box merge"):
            BoxMerge.from_iou(*bad)
    assert BoxMerge.from_metadata({}) == BoxMerge.off()
    assert BoxMerge.from_metadata(BoxMerge.chosen().to_metadata()) == BoxMerge.chosen()


def test_ship_writes_the_setting_and_a_plain_reship_removes_it():
    from training.release.ship import with_box_merge

    shipped = with_box_merge({"epochs": 60}, BoxMerge.chosen())
    assert BoxMerge.from_metadata(shipped) == BoxMerge(0.6, 0.5) and shipped["epochs"] == 60
    again = with_box_merge(shipped, BoxMerge.off())
    assert again == {"epochs": 60} and BoxMerge.from_metadata(again) == BoxMerge.off()


@pytest.fixture(scope="module")
def merged_model(tiny_checkpoint, tmp_path_factory):
    ckpt = load_checkpoint(tiny_checkpoint)
    folder = tmp_path_factory.mktemp("merge")
    path = save_checkpoint(folder / "merge.safetensors", ckpt.model,
                           {**ckpt.metadata, **BoxMerge(0.65, 0.4).to_metadata()})
    onnx_path = folder / "merge.onnx"
    export_onnx(path, onnx_path, check_images=None)
    return path, onnx_path


def test_export_carries_the_setting_and_every_backend_uses_it(merged_model, tiny_onnx):
    weights, onnx_path = merged_model
    info = read_onnx_info(onnx_path)
    assert (info.box_merge_iou, info.box_merge_score_ratio) == (pytest.approx(0.65), pytest.approx(0.4))
    for model in (onnx_path, weights):  # onnxruntime reads the ONNX metadata, torch the checkpoint's
        detector = Detector(model, warmup=0)
        assert (detector.merge_iou, detector.merge_score_ratio) == (pytest.approx(0.65), pytest.approx(0.4))
        detector.close()
    off = Detector(onnx_path, warmup=0, merge_iou=0)
    assert off.merge_iou is None  # asked off: plain NMS
    off.close()
    plain = Detector(tiny_onnx, warmup=0)
    assert plain.info.box_merge_iou is None and plain.merge_iou is None  # a model shipped without it
    plain.close()
    with pytest.raises(ValueError, match="box merge IoU"):
        Detector(tiny_onnx, warmup=0, merge_iou=2.0)


def test_detect_reports_the_merging_it_used(merged_model, tmp_path):
    _, onnx_path = merged_model
    clip = write_moving_clip(tmp_path / "clip.avi", frames=4, size=(96, 96))
    for extra, expected in (([], 0.65), (["--merge-iou", "0"], None), (["--merge-iou", "0.8"], 0.8)):
        report = tmp_path / f"report{len(extra)}{expected}.json"
        proc = subprocess.run([sys.executable, "-m", "app", "detect", str(clip), "--model", str(onnx_path),
                               "--report", str(report), *extra], cwd=REPO, capture_output=True, text=True,
                              timeout=300)
        assert proc.returncode == 0, proc.stderr
        assert json.loads(report.read_text())["box_merge_iou"] == (None if expected is None else pytest.approx(expected))
    bad = subprocess.run([sys.executable, "-m", "app", "detect", str(clip), "--model", str(onnx_path),
                          "--merge-iou", "1.5"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "--merge-iou" in bad.stderr and "box merge IoU" in bad.stderr


def test_val_uses_the_checkpoints_setting_unless_told_otherwise(merged_model, tmp_path):
    """``val`` scores a model as it ships (its merge IoU and score ratio); ``--merge-iou``
    overrides the IoU (0: plain NMS) and keeps the model's score ratio, as ``detect`` does."""
    from app.cli import main
    from training.evaluation.validate import box_merge_for

    from .synthetic import write_kvasir_like

    weights, _ = merged_model
    meta = load_checkpoint(weights).metadata
    assert box_merge_for(meta, None) == BoxMerge(0.65, 0.4)
    assert box_merge_for(meta, 0.8) == BoxMerge(0.8, 0.4) and box_merge_for(meta, 0) == BoxMerge.off()
    assert box_merge_for({}, None) == BoxMerge.off()
    data = write_kvasir_like(tmp_path / "kv", n=6)
    for extra, expected in (([], 0.65), (["--merge-iou", "0"], None)):
        out = tmp_path / f"val{len(extra)}.json"
        assert main(["val", "--weights", str(weights), "--data", str(data), "--bootstrap", "0", "--quiet",
                     "--json-out", str(out), *extra]) == 0
        assert json.loads(out.read_text())["box_merge_iou"] == (None if expected is None else pytest.approx(expected))


def test_the_app_says_when_it_merges_boxes(qtbot, merged_model, tmp_path):
    pytest.importorskip("PySide6.QtWidgets")
    from PySide6.QtCore import QSettings

    from app.gui.main_window import MainWindow

    _, onnx_path = merged_model
    settings = QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat)
    win = MainWindow(None, str(onnx_path), settings=settings, backend="onnxruntime-cpu")
    qtbot.addWidget(win)
    qtbot.waitUntil(lambda: win.detector is not None, timeout=30000)
    assert win.detector.merge_iou == pytest.approx(0.65)
    assert "box merging IoU > 0.65" in win.statusBar().currentMessage()
    win.close()
