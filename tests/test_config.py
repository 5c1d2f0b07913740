import json

import pytest
import torch

from models import ConfigError, YoloConfig, available_models, config_for, create
from models.layout import conv_layout, prunable_layout


def test_layout_matches_darknet_cfgs():
    plain, spp = conv_layout(False), conv_layout(True)
    assert len(plain) == 75 and len(spp) == 76
    backbone = [s for s in plain if s.name == "stem" or s.name.startswith("s")]
    assert len(backbone) == 52
    # yolov3.cfg head 0: 1x1, 3x3, 1x1, 3x3, 1x1, 3x3, 1x1 output
    head0 = [s.kernel for s in plain if s.name.startswith("h0.") and s.name != "h0.lateral"]
    assert head0 == [1, 3, 1, 3, 1, 3, 1]
    # yolov3-spp.cfg head 0: 1x1, 3x3, 1x1, [SPP], 1x1, 3x3, 1x1, 3x3, 1x1 output
    head0_spp = [s.kernel for s in spp if s.name.startswith("h0.") and s.name != "h0.lateral"]
    assert head0_spp == [1, 3, 1, 1, 3, 1, 3, 1]


def test_default_widths_follow_multiplier():
    full = YoloConfig()
    assert full.channels["stem"] == 32 and full.channels["s5.down"] == 1024
    quarter = YoloConfig(width=0.25)
    assert quarter.channels["s5.down"] == 256 and quarter.channels["stem"] == 8
    assert all(v % 8 == 0 for v in quarter.channels.values())
    assert not quarter.is_pruned


def test_json_round_trip_with_arbitrary_widths():
    cfg = config_for("yolov3-spp", width=0.25, input_size=320)
    widths = dict(cfg.channels)
    widths["s2.b1.reduce"] = 5
    widths["h1.c3"] = 17
    for name in [s.name for s in prunable_layout(True) if s.group == "s4"]:
        widths[name] = 40
    pruned = cfg.replace(channels=widths)
    assert pruned.is_pruned
    again = YoloConfig.from_json(pruned.to_json())
    assert again == pruned
    assert json.loads(again.to_json()) == json.loads(pruned.to_json())
    model = create("yolov3-spp", **{k: v for k, v in again.to_dict().items()})
    convs = model.named_convs()
    assert convs["s2.b1.reduce"].conv.out_channels == 5
    assert convs["s2.b1.expand"].conv.in_channels == 5
    assert convs["h1.c3"].conv.out_channels == 17
    assert convs["s4.b7.expand"].conv.out_channels == 40
    model.train()
    out = model(torch.zeros(1, 3, 320, 320))
    assert [o.shape[-1] for o in out] == [40, 20, 10]


def test_coupled_residual_widths_must_agree():
    cfg = YoloConfig(width=0.25)
    widths = dict(cfg.channels)
    widths["s3.b2.expand"] = 24
    with pytest.raises(ConfigError, match=r"s3\.b2\.expand.*residual additions \(group s3\)"):
        YoloConfig(width=0.25, channels=widths)


@pytest.mark.parametrize("size", [300, 31, 0, 415])
def test_odd_input_sizes_are_rejected(size):
    with pytest.raises(ConfigError, match="multiple of 32"):
        YoloConfig(input_size=size)


def test_forward_rejects_odd_input():
    model = create("yolov3", width=0.125, input_size=256).eval()
    with pytest.raises(ConfigError, match="input size 300 is not usable"):
        model(torch.zeros(1, 3, 300, 300))
    with pytest.raises(ValueError, match=r"expected input \[B, 3, H, W\]"):
        model(torch.zeros(1, 1, 256, 256))


def test_config_rejects_bad_fields():
    with pytest.raises(ConfigError, match="unknown config fields"):
        YoloConfig.from_dict({"num_classes": 1, "colour": "red"})
    with pytest.raises(ConfigError, match="class names"):
        YoloConfig(num_classes=2, class_names=("polyp",))
    with pytest.raises(ConfigError, match="9 anchors"):
        YoloConfig(anchors=((1, 1),) * 6)
    with pytest.raises(ConfigError, match="not valid JSON"):
        YoloConfig.from_json("{nope")


def test_registry():
    assert {"yolov3", "yolov3-spp"} <= set(available_models())
    with pytest.raises(KeyError, match="unknown model 'yolov4'.*yolov3"):
        create("yolov4")
    cfg = config_for("yolov3", num_classes=3)
    assert cfg.class_names == ("polyp", "class1", "class2")
