"""The fold-effect measurement runs end to end on synthetic data and reports every mode."""

import torch

from models import create, save_checkpoint
from training.pruning.fold_effect import format_table, main, measure
from training.pruning.slim import FOLD_MODES

from .synthetic import write_kvasir_like


def test_fold_effect_reports_every_mode(tmp_path, capsys):
    data = write_kvasir_like(tmp_path / "kv", n=10)
    torch.manual_seed(0)
    model = create("yolov3-spp", width=0.125, input_size=64)
    with torch.no_grad():
        for bn in (m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)):
            bn.bias.normal_(0, 0.5)  # removed channels then emit a constant worth folding
    weights = save_checkpoint(tmp_path / "m.safetensors", model)
    result = measure(weights, data, "l1", 0.5, recalibration_batches=2)
    rows = result["folds"]
    assert set(FOLD_MODES) <= set(rows)
    assert rows["all"]["mean_abs"] < rows["none"]["mean_abs"]  # the constants carry information
    for fold in FOLD_MODES:
        assert 0 <= rows[fold]["val_ap50_after_recalibration"] <= 1
    assert "| pointwise |" in format_table(result)
    assert main(["--weights", str(weights), "--data", str(data), "--method", "random", "--json-out",
                 str(tmp_path / "f.json")]) == 0
    assert "| none |" in capsys.readouterr().out and (tmp_path / "f.json").is_file()
