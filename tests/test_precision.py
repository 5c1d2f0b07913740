"""Reduced-precision copies: fp16 keeps the decode in float32, INT8 has Q/DQ nodes and keeps
the output layers in float, and both are judged by their detections against float32."""

import dataclasses
import json

import cv2
import numpy as np
import onnx
import pytest

from engine.detections import Detections
from engine.model_info import read_onnx_info
from engine.precision.fp16 import write_fp16
from engine.precision.int8 import float_nodes, quantize_int8
from engine.precision.parity import compare_detections

from .synthetic import draw_sample


def _dets(boxes, scores):
    return Detections(np.asarray(boxes, np.float32).reshape(-1, 4), np.asarray(scores, np.float32),
                      np.zeros(len(scores), np.int64))


def test_parity_matches_boxes_and_measures_score_drift_by_hand():
    ref = _dets([[0, 0, 10, 10], [50, 50, 70, 70]], [0.9, 0.4])
    cand = _dets([[1, 0, 11, 10], [100, 100, 110, 110]], [0.85, 0.3])
    p = compare_detections([(ref, cand), (_dets([], []), _dets([], []))])
    assert (p.frames, p.reference_boxes, p.candidate_boxes, p.matched) == (2, 2, 2, 1)
    assert p.recall_of_reference == 0.5
    assert p.mean_iou == pytest.approx(90 / 110) and p.max_score_drift == pytest.approx(0.05, abs=1e-6)
    assert p.crossings == 0 and compare_detections([(ref, cand)], threshold=0.87).crossings == 1  # 0.90 vs 0.85
    nothing = compare_detections([(ref, _dets([[200, 200, 210, 210]], [0.5]))])
    assert nothing.matched == 0 and nothing.mean_iou is None and "none of 2 float32 boxes found" in nothing.summary()


@pytest.fixture(scope="module")
def frames(tmp_path_factory):
    folder = tmp_path_factory.mktemp("frames")
    rng = np.random.default_rng(11)
    for i in range(6):
        cv2.imwrite(str(folder / f"f{i}.png"), draw_sample(rng, 140, 180)[0])
    return folder


def test_fp16_copy_keeps_io_and_decode_in_float32_and_finds_the_same_boxes(tiny_onnx, tmp_path, frames):
    out = write_fp16(tiny_onnx, tmp_path / "m.fp16.onnx")
    model = onnx.load(str(out))
    floats = {i.name: i.data_type for i in model.graph.initializer}
    assert sum(t == onnx.TensorProto.FLOAT16 for t in floats.values()) > 10  # the convolution weights
    types = {n.name: n for n in model.graph.node}
    assert any(n.startswith("/cast_in/") for n in types) and any(n.startswith("/cast_out/") for n in types)
    info = read_onnx_info(out)  # metadata kept, graph input/output still float32
    assert info == dataclasses.replace(read_onnx_info(tiny_onnx), precision="fp16") and info.precision == "fp16"
    assert {p.key: p.value for p in model.metadata_props}["precision"] == "fp16"
    from engine.precision.parity import parity_on_frames

    parity = parity_on_frames(tiny_onnx, out, sorted(frames.iterdir()))
    assert parity.reference_boxes > 0 and parity.recall_of_reference >= 0.9 and parity.mean_iou > 0.95


def test_int8_copy_has_qdq_nodes_but_float_outputs_and_decode(tiny_onnx, tmp_path, frames):
    out = quantize_int8(tiny_onnx, tmp_path / "m.int8.onnx", frames)
    model = onnx.load(str(out))
    ops = [n.op_type for n in model.graph.node]
    assert ops.count("QuantizeLinear") > 10 and ops.count("DequantizeLinear") > 10
    excluded = float_nodes(tiny_onnx)
    assert any("/out/conv/" in n for n in excluded) and any(n.startswith("/decoder/") for n in excluded)
    initialisers = {i.name for i in model.graph.initializer}
    out_convs = [n for n in model.graph.node if "/out/conv/" in n.name]
    quantized_convs = [n for n in model.graph.node if n.op_type == "Conv" and n.input[1] not in initialisers]
    assert len(out_convs) == 3 and all(n.input[1] in initialisers for n in out_convs)  # float weights
    assert len(quantized_convs) > 10  # the others read their weights through DequantizeLinear
    meta = {p.key: p.value for p in model.metadata_props}
    assert meta["precision"] == "int8" and "6 frames" in meta["int8_calibration"]
    assert read_onnx_info(out) == dataclasses.replace(read_onnx_info(tiny_onnx), precision="int8")


def test_quantize_command_writes_the_copy_and_its_comparison(tiny_onnx, tmp_path, frames, capsys):
    from app.cli import main

    out = tmp_path / "q.onnx"
    assert main(["quantize", "--onnx", str(tiny_onnx), "--out", str(out), "--calib", str(frames), "--check",
                 str(frames), "--json-out", str(tmp_path / "p.json")]) == 0
    text = capsys.readouterr().out
    assert f"wrote {out}" in text and "int8 against float32: 6 frames" in text
    report = json.loads((tmp_path / "p.json").read_text())
    assert report["frames"] == 6 and 0 <= report["recall_of_reference"] <= 1
    with pytest.raises(SystemExit, match="needs --calib"):
        main(["quantize", "--onnx", str(tiny_onnx), "--out", str(out)])


def test_calibration_takes_a_dataset_s_training_frames_and_refuses_test(tmp_path):
    from engine.precision.calibration import CalibrationError, calibration_images, images_digest

    (tmp_path / "images").mkdir()
    (tmp_path / "splits").mkdir()
    for name in ("a", "b", "c"):
        cv2.imwrite(str(tmp_path / "images" / f"{name}.png"), np.zeros((8, 8, 3), np.uint8))
    (tmp_path / "splits" / "train.txt").write_text("a\nb\n")
    (tmp_path / "splits" / "test.txt").write_text("c\n")
    files = calibration_images(tmp_path)
    assert [f.stem for f in files] == ["a", "b"]
    with pytest.raises(CalibrationError, match="test split would tune the model on what scores it"):
        calibration_images(tmp_path, split_file=tmp_path / "splits" / "test.txt")
    assert images_digest(files) != images_digest(files[:1])


def test_the_app_shows_which_precision_runs(qtbot, tiny_onnx, tmp_path):
    from PySide6.QtCore import QSettings

    from app.cpu_budget import CpuBudget
    from app.gui.main_window import MainWindow, wait_until

    half = write_fp16(tiny_onnx, tmp_path / "m.fp16.onnx")
    window = MainWindow(None, None, settings=QSettings(str(tmp_path / "s.ini"), QSettings.Format.IniFormat),
                        cpu_budget=CpuBudget(1, spin=False, opencv_threads=-1))
    qtbot.addWidget(window)
    window.load_model(str(half))
    assert wait_until(lambda: window.detector is not None, timeout=30)
    assert "on onnxruntime-cpu fp16" in window.statusBar().currentMessage()
