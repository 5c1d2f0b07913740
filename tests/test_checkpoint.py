import json
import os

import pytest
import torch
from safetensors.torch import save_file

from models import CheckpointError, create, load_checkpoint, read_header, save_checkpoint
from models.checkpoint import atomic_write_bytes


@pytest.fixture
def model():
    torch.manual_seed(0)
    m = create("yolov3-spp", width=0.125, input_size=128)
    # Non-trivial BN statistics, as after training.
    m.train()
    with torch.no_grad():
        m(torch.rand(4, 3, 128, 128))
    return m.eval()


def test_round_trip_is_bitwise(tmp_path, model):
    path = save_checkpoint(tmp_path / "m.safetensors", model, {"metrics": {"ap50": 0.5}, "split": "train"})
    ckpt = load_checkpoint(path)
    assert ckpt.config == model.config
    assert ckpt.metadata["metrics"] == {"ap50": 0.5} and "code_version" in ckpt.metadata
    x = torch.rand(2, 3, 128, 128)
    with torch.no_grad():
        assert torch.equal(model(x), ckpt.model(x))
    config, meta = read_header(path)
    assert config == model.config and meta["split"] == "train"


def test_pruned_widths_round_trip(tmp_path, model):
    widths = dict(model.config.channels)
    widths["h2.c1"] = 11
    pruned = create("yolov3-spp", width=0.125, input_size=128, channels=widths).eval()
    path = save_checkpoint(tmp_path / "p.safetensors", pruned)
    ckpt = load_checkpoint(path)
    assert ckpt.model.named_convs()["h2.c1"].conv.out_channels == 11
    x = torch.rand(1, 3, 128, 128)
    with torch.no_grad():
        assert torch.equal(pruned(x), ckpt.model(x))


def test_half_precision_checkpoint(tmp_path, model):
    full = save_checkpoint(tmp_path / "f.safetensors", model)
    half = save_checkpoint(tmp_path / "h.safetensors", model, half=True)
    assert half.stat().st_size < 0.6 * full.stat().st_size
    ckpt = load_checkpoint(half)
    assert next(ckpt.model.parameters()).dtype == torch.float32
    x = torch.rand(1, 3, 128, 128)
    with torch.no_grad():
        torch.testing.assert_close(model(x), ckpt.model(x), atol=0.05, rtol=0.02)


def test_truncated_file(tmp_path, model):
    path = save_checkpoint(tmp_path / "m.safetensors", model)
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(CheckpointError, match=r"m\.safetensors: truncated"):
        load_checkpoint(path)
    path.write_bytes(raw[:5])
    with pytest.raises(CheckpointError, match="too short"):
        load_checkpoint(path)


def test_corrupt_header(tmp_path, model):
    path = save_checkpoint(tmp_path / "m.safetensors", model)
    raw = bytearray(path.read_bytes())
    raw[10:20] = b"\xff" * 10
    path.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match="header is not valid JSON"):
        load_checkpoint(path)


def test_foreign_safetensors_file(tmp_path):
    path = tmp_path / "other.safetensors"
    save_file({"w": torch.zeros(3)}, str(path))
    with pytest.raises(CheckpointError, match="not a PolypScope checkpoint"):
        load_checkpoint(path)


def test_shape_mismatch_names_the_layer(tmp_path, model):
    path = save_checkpoint(tmp_path / "m.safetensors", model)
    raw = path.read_bytes()
    size = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8:8 + size])
    config = json.loads(header["__metadata__"]["config"])
    config["channels"]["h1.c0"] = 16  # the weights hold 32
    header["__metadata__"]["config"] = json.dumps(config)
    new_header = json.dumps(header).encode()
    new_header += b" " * (-len(new_header) % 8)
    path.write_bytes(len(new_header).to_bytes(8, "little") + new_header + raw[8 + size:])
    with pytest.raises(CheckpointError, match=r"layer heads\.1\.convs\.0\.conv\.weight has shape \(32, 96, 1, 1\) in the file but the config builds \(16, 96, 1, 1\)"):
        load_checkpoint(path)


def test_missing_and_folder_paths(tmp_path):
    with pytest.raises(CheckpointError, match="no such checkpoint file"):
        load_checkpoint(tmp_path / "nope.safetensors")
    with pytest.raises(CheckpointError, match="is a folder"):
        load_checkpoint(tmp_path)


def test_atomic_write_keeps_old_file_on_failure(tmp_path, monkeypatch):
    target = tmp_path / "m.bin"
    atomic_write_bytes(target, b"old")

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        atomic_write_bytes(target, b"new")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["m.bin"]
