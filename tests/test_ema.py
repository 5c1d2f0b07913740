"""The weight average that is validated and shipped: its decay ramp, its update, and that
the settings asked for (train, prune, study) are the ones the trainer averages with."""

import math

import pytest
import torch
from torch import nn

from app.cli import build_parser
from training.loop.ema import ModelEMA
from training.loop.trainer import TrainConfig, Trainer
from training.pruning.prune import PruneJob, finetune_config

from .synthetic import write_kvasir_like


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 2, bias=False), nn.BatchNorm1d(2))


def test_decay_ramps_up_to_its_cap_with_the_time_constant():
    ema = ModelEMA(_net(), decay=0.99, tau=100.0)
    assert ema.current_decay() == 0.0  # the first update copies the model: no weight of the initialisation
    ema.updates = round(100 * math.log(2) * 1000) / 1000
    assert ema.current_decay() == pytest.approx(0.99 / 2, rel=1e-4)
    ema.updates = 10_000
    assert ema.current_decay() == pytest.approx(0.99, rel=1e-12)
    # YOLOv5/v8's defaults on a Kvasir-sized run: 30 epochs of 61 steps average over ~2.5 steps.
    short = ModelEMA(_net())
    short.updates = 30 * 61
    assert 1 / (1 - short.current_decay()) == pytest.approx(2.50, abs=0.05)


def test_update_is_the_weighted_average_and_copies_counters():
    model = _net()
    ema = ModelEMA(model, decay=0.9, tau=1.0)
    ema.updates = 50  # ramped up: the next update uses 0.9 * (1 - e^-51)
    old = ema.module[0].weight.clone()
    with torch.no_grad():
        model[0].weight.add_(1.0)
        model[1].num_batches_tracked += 7
    ema.update(model)
    d = 0.9 * (1 - math.exp(-51))
    assert torch.allclose(ema.module[0].weight, d * old + (1 - d) * model[0].weight)
    assert int(ema.module[1].num_batches_tracked) == 7  # integers are copied, never averaged
    assert ema.updates == 51


def test_the_trainer_averages_with_the_settings_asked_for(tmp_path):
    data = write_kvasir_like(tmp_path / "kv", n=12)
    cfg = TrainConfig(data=str(data), out=str(tmp_path / "run"), width=0.125, img=64, epochs=1, batch=4,
                      workers=0, ema_decay=0.995, ema_tau=124.0)
    trainer = Trainer(cfg, show_progress=False)
    trainer._prepare()  # builds the model, its average and the loaders; trains nothing
    assert (trainer.ema.decay, trainer.ema.tau) == (0.995, 124.0)


def test_prune_and_train_commands_pass_the_average_on(tiny_checkpoint, tmp_path):
    job = PruneJob(tiny_checkpoint, "taylor", 0.5, tmp_path / "p.safetensors", ema_decay=0.995, ema_tau=124.0)
    cfg = finetune_config(job, tiny_checkpoint, 30, tmp_path / "ft")
    assert (cfg.ema_decay, cfg.ema_tau) == (0.995, 124.0)
    default = finetune_config(PruneJob(tiny_checkpoint, "taylor", 0.5, tmp_path / "q.safetensors"),
                              tiny_checkpoint, 30, tmp_path / "ft2")
    assert (default.ema_decay, default.ema_tau) == (0.9999, 2000.0)  # YOLOv5/v8's, unchanged
    train = build_parser().parse_args(["train", "--ema-decay", "0.995", "--ema-tau", "124"])
    prune = build_parser().parse_args(["prune", "--weights", "w", "--method", "taylor", "--ratio", "0.5",
                                       "--out", "o", "--ema-decay", "0.995", "--ema-tau", "124"])
    for args in (train, prune):
        assert (args.ema_decay, args.ema_tau) == (0.995, 124.0)


@pytest.mark.parametrize("flag, value", [("--ema-decay", "1.0"), ("--ema-decay", "-0.1"), ("--ema-tau", "0")])
def test_an_average_that_cannot_work_is_refused_before_anything_runs(flag, value, capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", flag, value])
    assert f"{value}: the" in capsys.readouterr().err
    with pytest.raises(ValueError, match="EMA decay must be in"):
        ModelEMA(_net(), decay=float(value) if flag == "--ema-decay" else 0.9, tau=float(value) if flag == "--ema-tau" else 1)
