"""Shipping a network to run at another input size: the same weights, the new size recorded."""

import pytest
import torch

from models import ConfigError, create, load_checkpoint, save_checkpoint, with_input_size


def test_the_same_weights_run_at_the_new_size(tmp_path):
    torch.manual_seed(0)
    model = create("yolov3-spp", width=0.0625, input_size=64).eval()
    resized = with_input_size(model, 96)
    assert resized.config.input_size == 96 and model.config.input_size == 64
    for k, v in model.state_dict().items():
        assert torch.equal(v, resized.state_dict()[k]), k
    frame = torch.rand(1, 3, 96, 96)
    with torch.no_grad():
        raw_a, raw_b = model.forward_raw(frame), resized.forward_raw(frame)
        out = resized(frame)
    for a, b in zip(raw_a, raw_b, strict=True):
        assert torch.equal(a, b)  # fully convolutional: nothing but the recorded size changes
    assert [r.shape[-1] for r in raw_b] == [12, 6, 3]  # strides 8, 16, 32 tile 96 px
    assert out[..., :4].max() <= 96 * 4  # boxes in the new input's pixels, not wild
    save_checkpoint(tmp_path / "m.safetensors", resized, {})
    assert load_checkpoint(tmp_path / "m.safetensors").config.input_size == 96  # export and the app read this
    with pytest.raises(ConfigError, match="multiple of 32"):
        with_input_size(model, 100)


def test_a_model_shipped_larger_is_pruned_and_studied_at_its_trained_size(tmp_path):
    torch.manual_seed(0)
    model = create("yolov3-spp", width=0.0625, input_size=64).eval()
    save_checkpoint(tmp_path / "shipped.safetensors", with_input_size(model, 96), {"trained_input_size": 64})
    shipped = load_checkpoint(tmp_path / "shipped.safetensors")
    assert shipped.config.input_size == 96 and shipped.trained_input_size == 64
    trained = shipped.model_at_trained_size()
    assert trained.config.input_size == 64
    assert all(torch.equal(v, trained.state_dict()[k]) for k, v in shipped.model.state_dict().items())
    plain = load_checkpoint(tmp_path / "shipped.safetensors")
    plain.metadata.pop("trained_input_size")
    assert plain.model_at_trained_size() is plain.model  # nothing recorded: as it is


def test_export_can_bake_in_another_size(tmp_path):
    from engine.export import export_onnx
    from engine.model_info import read_onnx_info

    torch.manual_seed(0)
    save_checkpoint(tmp_path / "m.safetensors", create("yolov3-spp", width=0.0625, input_size=64).eval(), {})
    result = export_onnx(tmp_path / "m.safetensors", tmp_path / "m.onnx", input_size=96, check_images=None,
                         simplify=False)
    assert read_onnx_info(result.path).input_size == 96


def test_training_from_a_checkpoint_shipped_larger_records_the_size_it_trains_at(tmp_path):
    from training.loop.trainer import TrainConfig, Trainer

    from .synthetic import write_kvasir_like

    data = write_kvasir_like(tmp_path / "kv", n=9)
    torch.manual_seed(0)
    base = create("yolov3-spp", width=0.0625, input_size=64)
    save_checkpoint(tmp_path / "shipped.safetensors", with_input_size(base, 96), {"trained_input_size": 64})
    cfg = TrainConfig(data=str(data), out=str(tmp_path / "run"), img=64, epochs=1, batch=2, workers=0,
                      init_weights=str(tmp_path / "shipped.safetensors"), mine_negatives=False,
                      negative_fraction=0.0, close_mosaic=0)
    Trainer(cfg, show_progress=False).run()
    assert load_checkpoint(tmp_path / "run" / "last.safetensors").config.input_size == 64
