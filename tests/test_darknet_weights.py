import struct

import numpy as np
import pytest
import torch

from models import create
from models.darknet_weights import (
    DarknetWeightsError,
    darknet_float_count,
    load_darknet_weights,
    save_darknet_weights,
)

OFFICIAL_FLOATS = 62_001_757
OFFICIAL_BYTES = 248_007_048


def _randomise(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for t in list(model.parameters()) + [b for n, b in model.named_buffers() if "running" in n]:
            t.copy_(torch.rand(t.shape, generator=g) + 0.5)
    return model


def _same(a: torch.nn.Module, b: torch.nn.Module, prefix: str = "") -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return all(torch.equal(sa[k], sb[k]) for k in sa if k.startswith(prefix) and "num_batches" not in k)


@pytest.mark.slow
def test_official_yolov3_layout_to_the_last_byte(tmp_path):
    model = create("yolov3", num_classes=80)
    assert darknet_float_count(model) == OFFICIAL_FLOATS
    _randomise(model, 0)
    path = save_darknet_weights(model, tmp_path / "yolov3.weights", seen=32013312)
    assert path.stat().st_size == OFFICIAL_BYTES
    major, minor, rev, seen = struct.unpack("<3iq", path.read_bytes()[:20])
    assert (major, minor, rev, seen) == (0, 2, 0, 32013312)
    fresh = create("yolov3", num_classes=80)
    report = load_darknet_weights(fresh, path)
    assert len(report.loaded) == 75 and not report.skipped and report.seen == 32013312
    assert _same(model, fresh)
    # The first float after the header is the first BN beta of the stem, as Darknet writes it.
    first = np.frombuffer(path.read_bytes(), "<f4", count=1, offset=20)[0]
    assert first == model.backbone.stem.bn.bias[0].item()


def _small(num_classes=1, spp=False):
    return create("yolov3-spp" if spp else "yolov3", width=0.125, num_classes=num_classes, input_size=128)


def test_round_trip_gives_identical_outputs(tmp_path):
    src = _randomise(_small(spp=True), 1).eval()
    path = save_darknet_weights(src, tmp_path / "m.weights")
    dst = _small(spp=True).eval()
    load_darknet_weights(dst, path)
    x = torch.rand(1, 3, 128, 128)
    with torch.no_grad():
        assert torch.equal(src(x), dst(x))


def test_backbone_only_file_loads_partially(tmp_path):
    src = _randomise(_small(num_classes=80), 2)
    path = save_darknet_weights(src, tmp_path / "darknet53.conv.74", upto=52)
    dst = _small(num_classes=1)
    head_before = dst.heads[0].pre.conv.weight.clone()
    report = load_darknet_weights(dst, path)
    assert len(report.loaded) == 52 and report.partial
    assert set(report.skipped) == {n for n in dst.named_convs() if n.startswith("h")}
    assert _same(src, dst, "backbone.")
    assert torch.equal(dst.heads[0].pre.conv.weight, head_before)


def test_full_file_with_other_class_count_skips_only_outputs(tmp_path):
    src = _randomise(_small(num_classes=80), 3)
    path = save_darknet_weights(src, tmp_path / "coco.weights")
    dst = _small(num_classes=1)
    report = load_darknet_weights(dst, path, file_num_classes=80)
    assert set(report.skipped) == {"h0.out", "h1.out", "h2.out"}
    assert len(report.loaded) == 72
    assert _same(src, dst, "backbone.")
    assert torch.equal(src.heads[2].pre.conv.weight, dst.heads[2].pre.conv.weight)


def test_truncated_and_oversized_files_are_refused(tmp_path):
    src = _small()
    path = save_darknet_weights(src, tmp_path / "m.weights")
    raw = path.read_bytes()
    cut = tmp_path / "cut.weights"
    cut.write_bytes(raw[:-400])
    with pytest.raises(DarknetWeightsError, match=r"cut\.weights: truncated inside layer 74 \(h2\.out\)"):
        load_darknet_weights(_small(), cut)
    big = tmp_path / "big.weights"
    big.write_bytes(raw + b"\0" * 40)
    with pytest.raises(DarknetWeightsError, match="10 floats left over"):
        load_darknet_weights(_small(), big)
    odd = tmp_path / "odd.weights"
    odd.write_bytes(raw + b"\0")
    with pytest.raises(DarknetWeightsError, match="not a whole number of float32"):
        load_darknet_weights(_small(), odd)


def test_old_header_with_int32_seen(tmp_path):
    src = _randomise(_small(), 4)
    path = save_darknet_weights(src, tmp_path / "m.weights")
    body = path.read_bytes()[20:]
    old = tmp_path / "old.weights"
    old.write_bytes(struct.pack("<3ii", 0, 1, 0, 1234) + body)
    dst = _small()
    report = load_darknet_weights(dst, old)
    assert report.seen == 1234 and report.header == (0, 1, 0)
    assert _same(src, dst)
