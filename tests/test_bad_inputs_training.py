"""Bad inputs on the training side (issue 10, section 2).

Each case is either skipped with a warning naming the id and the file, or refused with one
line on stderr naming the file or argument (exit 1, no traceback), and ``data check``,
``train`` and ``val`` agree on which samples are usable because they share one check.
"""

from __future__ import annotations

import json
import pickle
import re
import struct
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from app.cli import main
from engine.backends.onnxruntime_backend import OnnxRuntimeBackend
from engine.model_info import ModelFormatError, ModelInfo, expected_rows, read_onnx_info
from models import create, save_checkpoint
from training.data.data_check import check_dataset, open_checked
from training.data.datasets import open_dataset
from training.data.image_files import UnreadableImage, read_image

from .synthetic import draw_sample, truncate_file, write_kvasir_like, write_mask_folder, write_yolo_folder

VAL_ID = "img010"  # in the val split of write_kvasir_like(n=12): ids 8-11 are val


def cli(capsys, *argv) -> tuple[int, str, str]:
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def assert_clear_error(rc: int, err: str, *fragments: str) -> None:
    lines = err.strip().splitlines()
    assert rc == 1 and len(lines) == 1 and lines[0].startswith("error: "), err
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


pytestmark = pytest.mark.usefixtures("restore_torch_threads")  # `threads=1` runs set it for the process


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    model = create("yolov3-spp", width=0.125, input_size=64).eval()
    return save_checkpoint(tmp_path_factory.mktemp("weights") / "tiny.safetensors", model)


def run_command(capsys, command: str, data: Path, weights: Path, tmp_path: Path) -> tuple[int, str, str]:
    """``data check``, ``train`` (zero epochs: data, model and run folder only) or ``val``."""
    if command == "data check":
        return cli(capsys, "data", "check", data, "--quiet")
    if command == "train":
        return cli(capsys, "train", "--data", data, "--out", tmp_path / "run", "--width", "0.125", "--img", "64",
                   "--epochs", "0", "--batch", "2", "--workers", "0", "--threads", "1", "--quiet")
    return cli(capsys, "val", "--weights", weights, "--data", data, "--split", "val", "--bootstrap", "0", "--quiet")


def write_splits(root: Path, ids: list[str]) -> None:
    (root / "splits").mkdir(exist_ok=True)
    (root / "splits" / "train.txt").write_text("\n".join(ids[: len(ids) * 2 // 3]) + "\n")
    (root / "splits" / "val.txt").write_text("\n".join(ids[len(ids) * 2 // 3:]) + "\n")


# -- 1. masks of another size than their image ------------------------------------------

def test_mask_of_another_size_is_rescaled_before_taking_boxes(tmp_path):
    root = write_mask_folder(tmp_path / "cvc", n=2)
    rng = np.random.default_rng(5)
    image, mask, truth = draw_sample(rng, 160, 240, max_polyps=1)
    cv2.imwrite(str(root / "images" / "odd.png"), image)
    cv2.imwrite(str(root / "masks" / "odd.png"), cv2.resize(mask, (60, 40), interpolation=cv2.INTER_NEAREST))
    index = open_dataset(root)
    odd = next(s for s in index.samples if s.id == "odd")
    np.testing.assert_allclose(odd.boxes, np.asarray(truth, np.float32), atol=4.0)  # 4x nearest-neighbour steps
    (problem,) = [p for p in index.problems if p.item == "odd"]
    assert not problem.skipped
    assert str(problem).startswith("masks/odd.png: mask is 60x40, image 240x160: rescaled to the image")


@pytest.mark.parametrize("fmt", ["masks", "kvasir"])
@pytest.mark.parametrize("command", ["data check", "train", "val"])
def test_mask_size_mismatch_is_reported_by_every_command(capsys, tmp_path, weights, fmt, command):
    if fmt == "masks":
        root = write_mask_folder(tmp_path / "cvc", n=12)
        write_splits(root, [f"{i:03d}" for i in range(12)])
        item, mask_path, expected = "010", root / "masks" / "010.png", "mask is 75x60, image 150x120: rescaled"
    else:
        root = write_kvasir_like(tmp_path / "kv", n=12)
        item, mask_path = VAL_ID, root / "masks" / f"{VAL_ID}.png"
        expected = "mask is 100x80, image 200x160 in kavsir_bboxes.json"
    mask = cv2.imread(str(mask_path), cv2.IMREAD_GRAYSCALE)
    cv2.imwrite(str(mask_path), cv2.resize(mask, (mask.shape[1] // 2, mask.shape[0] // 2)))
    rc, out, err = run_command(capsys, command, root, weights, tmp_path)
    assert rc == 0, err
    lines = [line for line in (out + err).splitlines() if expected in line]
    assert len(lines) == 1 and f"masks/{item}.png" in lines[0] and f"(id {item})" in lines[0], out + err
    assert "SKIPPED" not in lines[0]


# -- 2. images that cannot be decoded -----------------------------------------------------

def _jpeg_bytes() -> bytes:
    image, _, _ = draw_sample(np.random.default_rng(0), 120, 160)
    return cv2.imencode(".jpg", image)[1].tobytes()


def _png_bytes() -> bytes:
    image, _, _ = draw_sample(np.random.default_rng(0), 120, 160)
    return cv2.imencode(".png", image)[1].tobytes()


@pytest.mark.parametrize(("name", "content", "detail"), [
    ("intact.jpg", _jpeg_bytes(), None),
    ("zero-padded.jpg", _jpeg_bytes() + b"\0" * 64, None),
    ("half.jpg", _jpeg_bytes()[: len(_jpeg_bytes()) // 2], "truncated JPEG (no end-of-image marker FF D9)"),
    ("half-padded.jpg", _jpeg_bytes()[: len(_jpeg_bytes()) // 2] + b"\0" * 64, "truncated JPEG"),
    ("half.png", _png_bytes()[: len(_png_bytes()) // 2], "truncated PNG (no IEND chunk)"),
    ("empty.jpg", b"", "empty file"),
    ("junk.jpg", b"not a jpeg at all", "not an image, or corrupt"),
])
def test_one_rule_for_undecodable_files(tmp_path, capfd, name, content, detail):
    path = tmp_path / name
    path.write_bytes(content)
    if detail is None:
        assert read_image(path).shape == (120, 160, 3)
    else:
        with pytest.raises(UnreadableImage, match=re.escape(detail)) as caught:
            read_image(path)
        assert str(caught.value).startswith(f"{path}: image cannot be decoded")
    assert "Premature end" not in capfd.readouterr().err  # decided before libjpeg sees the bytes


@pytest.mark.parametrize("damage", ["truncated", "junk"])
@pytest.mark.parametrize("fmt", ["kvasir", "masks", "yolo"])
def test_every_reader_skips_an_undecodable_image(tmp_path, capfd, fmt, damage):
    writer = {"kvasir": write_kvasir_like, "masks": write_mask_folder, "yolo": write_yolo_folder}[fmt]
    root = writer(tmp_path / fmt, n=6)
    image = sorted((root / "images").iterdir())[2]
    if damage == "truncated":
        truncate_file(image, 0.5, zero_padding=32)
    else:
        image.write_bytes(b"\x00garbage")
    index = open_checked(root)
    assert len(index.samples) == 5 and image.stem not in {s.id for s in index.samples}
    (problem,) = index.skipped
    assert problem.item == image.stem and problem.path == f"images/{image.name}"
    assert str(problem).startswith(f"SKIPPED images/{image.name}: image cannot be decoded: ")
    assert str(problem).endswith(f"(id {image.stem})")
    assert "Premature end" not in capfd.readouterr().err


@pytest.mark.parametrize("command", ["data check", "train", "val"])
def test_truncated_image_is_skipped_with_a_warning_by_every_command(capfd, tmp_path, weights, command):
    root = write_kvasir_like(tmp_path / "kv", n=12)
    truncate_file(root / "images" / f"{VAL_ID}.jpg")
    rc, out, err = run_command(capfd, command, root, weights, tmp_path)
    assert rc == 0, err
    text = out + err
    named = [line for line in text.splitlines() if f"images/{VAL_ID}.jpg: image cannot be decoded" in line]
    assert len(named) == 1 and f"(id {VAL_ID})" in named[0] and "truncated JPEG" in named[0]
    assert "Premature end" not in text and "Traceback" not in text
    if command == "data check":
        assert "11 usable images" in out and "split val: 4 listed, 3 usable" in out and "(1 items skipped)" in out
    elif command == "val":
        assert "on val (3 images" in out and "1 item(s) skipped, 3 usable" in err


# -- 3. one source of truth ---------------------------------------------------------------

def test_kvasir_image_without_mask_is_named_not_skipped(tmp_path):
    root = write_kvasir_like(tmp_path / "kv", n=6)
    (root / "masks" / "img002.png").unlink()
    report = check_dataset(root, show_progress=False)
    assert report["images"] == 6 and report["skipped"] == []
    assert any(p.startswith("masks/img002.jpg: mask file missing") and p.endswith("(id img002)")
               for p in report["problems"]), report["problems"]


@pytest.mark.parametrize("command", ["data check", "val"])
def test_split_listing_a_missing_id_names_id_and_file(capsys, tmp_path, weights, command):
    root = write_kvasir_like(tmp_path / "kv", n=12)
    with open(root / "splits" / "val.txt", "a") as fh:
        fh.write("ghost\n")
    rc, out, err = run_command(capsys, command, root, weights, tmp_path)
    assert rc == 0, err
    lines = [line for line in (out + err).splitlines() if "ghost" in line]
    assert len(lines) == 1 and "splits/val.txt" in lines[0] and "listed in the split but not in the dataset" in lines[0]


def test_data_check_and_val_agree_on_usable_samples(capsys, tmp_path, weights):
    root = write_kvasir_like(tmp_path / "kv", n=12)
    truncate_file(root / "images" / "img008.jpg")
    (root / "images" / "img009.jpg").write_bytes(b"junk")
    (root / "images" / "img010.jpg").unlink()
    rc, _, err = cli(capsys, "data", "check", root, "--quiet", "--json-out", tmp_path / "check.json")
    assert rc == 0, err
    rc, _, err = cli(capsys, "val", "--weights", weights, "--data", root, "--split", "val", "--bootstrap", "0",
                     "--quiet", "--json-out", tmp_path / "val.json")
    assert rc == 0, err
    report, metrics = json.loads((tmp_path / "check.json").read_text()), json.loads((tmp_path / "val.json").read_text())
    assert report["splits"]["val"]["usable"] == metrics["images"] == 1
    assert {"img008", "img009", "img010"} <= set(report["skipped"])


def _empty_dataset(root: Path) -> Path:
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    (root / "splits").mkdir()
    (root / "kavsir_bboxes.json").write_text("{}")
    for split in ("train", "val"):
        (root / "splits" / f"{split}.txt").write_text("")
    return root


def _split_of_broken_images(root: Path) -> Path:
    write_kvasir_like(root, n=12)
    for i in range(8, 12):
        truncate_file(root / "images" / f"img{i:03d}.jpg")
    return root


@pytest.mark.parametrize("command", ["train", "val"])
def test_empty_dataset_is_an_error(capsys, tmp_path, weights, command):
    root = _empty_dataset(tmp_path / "data")
    rc, _, err = run_command(capsys, command, root, weights, tmp_path)
    split = "train" if command == "train" else "val"  # train reads its training split first
    assert_clear_error(rc, err, f"{root / 'splits' / split}.txt: split '{split}' has no usable samples: it lists nothing")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("command", ["train", "val"])
def test_split_without_a_usable_sample_is_an_error(capsys, tmp_path, weights, command):
    root = _split_of_broken_images(tmp_path / "data")
    rc, _, err = run_command(capsys, command, root, weights, tmp_path)
    assert_clear_error(rc, err, f"{root / 'splits' / 'val'}.txt: split 'val' has no usable samples: "
                                "all 4 items were skipped (see 'polypscope data check")


@pytest.mark.parametrize("make", [_empty_dataset, _split_of_broken_images])
def test_data_check_reports_an_empty_dataset_or_split(capsys, tmp_path, make):
    root = make(tmp_path / "data")
    rc, out, _ = cli(capsys, "data", "check", root, "--quiet")
    assert rc == 0 and "has no usable samples" in out and "problems: 0 " not in out
    rc, _, _ = cli(capsys, "data", "check", root, "--quiet", "--strict")
    assert rc == 1


# -- 4. a model file of another kind given as --weights -----------------------------------

def _onnx_bytes() -> bytes:
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9).SerializeToString()


def _torch_save(legacy: bool) -> bytes:
    import io

    buf = io.BytesIO()
    torch.save({"w": torch.zeros(3)}, buf, _use_new_zipfile_serialization=not legacy)
    return buf.getvalue()


FOREIGN_WEIGHTS = [
    ("x.pt", lambda: _torch_save(legacy=False), "a PyTorch pickle file"),
    ("old.pt", lambda: _torch_save(legacy=True), "a pickle file"),
    ("model.pkl", lambda: pickle.dumps({"w": [0.0]}, protocol=4), "a pickle file"),
    ("model.onnx", _onnx_bytes, "an ONNX model"),
    ("renamed.bin", _onnx_bytes, "an ONNX model"),
    ("model.engine", lambda: b"ftrt" + bytes(60), "a TensorRT engine"),
    ("yolov3.weights", lambda: struct.pack("<3iq", 0, 2, 0, 0) + bytes(40), "Darknet weights"),
    ("darknet.bin", lambda: struct.pack("<3iq", 0, 2, 0, 32) + bytes(40), "Darknet weights"),
]


@pytest.mark.parametrize(("name", "content", "kind"), FOREIGN_WEIGHTS, ids=[f[0] for f in FOREIGN_WEIGHTS])
@pytest.mark.parametrize("command", ["val", "export"])
def test_weights_of_another_format_are_named(capsys, tmp_path, name, content, kind, command):
    path = tmp_path / name
    path.write_bytes(content())
    if command == "val":
        rc, _, err = cli(capsys, "val", "--weights", path, "--data", tmp_path, "--quiet")
    else:
        rc, _, err = cli(capsys, "export", "--weights", path, "--out", tmp_path / "out.onnx")
    assert_clear_error(rc, err, f"{path}: {kind}", "safetensors")
    assert "header claims" not in err and not (tmp_path / "out.onnx").exists()


# -- 5. an ONNX whose graph does not match its metadata -----------------------------------

INFO = ModelInfo(class_names=("polyp",), input_size=32, letterbox_colour=(114, 114, 114), normalisation="rgb/255",
                 anchors=((10.0, 13.0),) * 9, strides=(8, 16, 32), source_sha256="0" * 64,
                 output_layout="x1,y1,x2,y2,objectness,class scores...")
ROWS = expected_rows(INFO)  # 3 * (16 + 4 + 1) = 63


def write_onnx(path: Path, inp=("images", [1, 3, 32, 32]), out=("predictions", [1, ROWS, 6])) -> Path:
    """A small graph (flatten, slice, reshape) with the given input and output, carrying INFO."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    values = int(np.prod(out[1][1:]))
    consts = {"starts": [0], "ends": [values], "axes": [1], "shape": out[1]}
    graph = helper.make_graph(
        [helper.make_node("Flatten", [inp[0]], ["flat"], axis=1),
         helper.make_node("Slice", ["flat", "starts", "ends", "axes"], ["part"]),
         helper.make_node("Reshape", ["part", "shape"], [out[0]])],
        "g", [helper.make_tensor_value_info(inp[0], TensorProto.FLOAT, inp[1])],
        [helper.make_tensor_value_info(out[0], TensorProto.FLOAT, out[1])],
        [numpy_helper.from_array(np.asarray(v, np.int64), k) for k, v in consts.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)
    for key, value in INFO.to_metadata().items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(model, str(path))
    return path


GRAPH_MISMATCHES = [
    ("another network", {"inp": ("x", [1, 10]), "out": ("y", [1, 5])},
     "its inputs are ['x'], the metadata says one input 'images'"),
    ("input size", {"inp": ("images", [1, 3, 64, 64])},
     "input 'images' is tensor(float) [1, 3, 64, 64], expected tensor(float) ['1 or dynamic', 3, 32, 32]"),
    ("output name", {"out": ("output", [1, ROWS, 6])}, "its outputs are ['output'], the metadata says one output"),
    ("class count", {"out": ("predictions", [1, ROWS, 7])}, f"expected tensor(float) ['B', {ROWS}, 6]"),
    ("row count", {"out": ("predictions", [1, 42, 6])}, "output 'predictions' is tensor(float) [1, 42, 6]"),
]


def test_matching_onnx_graph_is_accepted(tmp_path):
    path = write_onnx(tmp_path / "ok.onnx")
    assert read_onnx_info(path) == INFO
    backend = OnnxRuntimeBackend(path, INFO)
    assert backend.infer(np.zeros((1, 3, 32, 32), np.float32)).shape == (1, ROWS, 6)


@pytest.mark.parametrize(("case", "graph", "fragment"), GRAPH_MISMATCHES, ids=[g[0] for g in GRAPH_MISMATCHES])
def test_onnx_graph_must_match_its_metadata(tmp_path, case, graph, fragment):
    path = write_onnx(tmp_path / "bad.onnx", **graph)
    for opening in (lambda: read_onnx_info(path), lambda: OnnxRuntimeBackend(path, INFO)):
        with pytest.raises(ModelFormatError) as caught:
            opening()
        message = str(caught.value)
        assert message.startswith(f"{path}: the graph does not match its PolypScope metadata") and "\n" not in message
        assert fragment in message, message


def test_mismatched_onnx_fails_in_one_line_on_the_command_line(capsys, tmp_path):
    path = write_onnx(tmp_path / "bad.onnx", inp=("images", [1, 3, 64, 64]))
    rc, _, err = cli(capsys, "bench", "--model", path, "--iterations", "1", "--warmup", "0", "--quiet")
    assert_clear_error(rc, err, f"{path}: the graph does not match its PolypScope metadata")


def test_runtime_and_training_apply_the_same_truncation_rule():
    """The rule lives twice (the runtime may not import ``training``): both copies must give
    the same verdict on whole, padded, trailed, cut and foreign files."""
    from app.streaming.image_files import truncation_problem
    from training.data.image_files import truncation

    image = np.random.default_rng(0).integers(0, 256, (40, 50, 3), dtype=np.uint8)
    jpeg, png = (cv2.imencode(ext, image)[1].tobytes() for ext in (".jpg", ".png"))
    cases = [jpeg, jpeg + b"\0" * 16, jpeg + b"trailer", jpeg[: len(jpeg) // 2], jpeg[:-2],
             png, png + b"\0" * 8, png[:-12], b"BM not a jpeg", b""]
    verdicts = [truncation(data) for data in cases]
    assert verdicts == [truncation_problem(data) for data in cases]
    assert [v is not None for v in verdicts] == [False, False, False, True, True, False, False, True, False, False]
