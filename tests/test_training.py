import dataclasses
import json
import os
import subprocess
import sys

import pytest
import torch

from models import load_checkpoint
from training.loop.trainer import TrainConfig, Trainer, TrainingDiverged, lr_at, warmup_steps

from .conftest import REPO
from .synthetic import write_kvasir_like


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_kvasir_like(tmp_path_factory.mktemp("data") / "kv", n=12)


def _cfg(data, out, epochs=2, **kw):
    return TrainConfig(data=str(data), out=str(out), width=0.125, img=64, epochs=epochs, batch=4,
                       workers=0, close_mosaic=1, warmup_epochs=0.5, **kw)


def test_schedule_warms_up_then_decays():
    lrs = [lr_at(s, 1000, 100, 0.01, 0.05) for s in range(1000)]
    assert lrs[0] == pytest.approx(1e-4) and lrs[99] == pytest.approx(0.01)
    assert all(a >= b for a, b in zip(lrs[100:], lrs[101:]))
    assert lrs[-1] == pytest.approx(0.0005, rel=1e-9)  # the last step lands on the tail


def test_warm_up_is_what_was_asked_even_when_short():
    assert warmup_steps(1.0, 49, 98) == 49  # a 2-epoch fine-tune warms up for one epoch, not 100 steps
    assert warmup_steps(0.0, 49, 98) == 0
    assert warmup_steps(3.0, 49, 98) == 49  # capped at half the run, so the cosine decay always runs


def test_train_writes_checkpoints_logs_and_plots(data, tmp_path):
    out = tmp_path / "run"
    metrics = Trainer(_cfg(data, out), show_progress=False).run()
    for name in ("best.safetensors", "last.safetensors", "state.safetensors", "results.csv",
                 "results.jsonl", "results.png", "pr_curve.png", "train_config.json"):
        assert (out / name).is_file(), name
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2]
    assert metrics["epoch"] == 2 and 0 <= metrics["val_ap50"] <= 1
    # A 2-epoch run ends on the cosine tail (the lr logged is the last step's).
    cfg = _cfg(data, out)
    assert rows[-1]["lr"] == pytest.approx(cfg.lr * cfg.final_lr_fraction, rel=1e-6)
    assert rows[0]["lr"] > 5 * rows[-1]["lr"]
    ckpt = load_checkpoint(out / "last.safetensors")
    assert ckpt.config.input_size == 64 and ckpt.metadata["train_split"] == "train"
    # Anchors were fitted to the data, not left at COCO's.
    assert ckpt.config.anchors[0] != (10.0, 13.0)


def test_resume_continues_exactly(data, tmp_path, monkeypatch):
    straight = tmp_path / "straight"
    Trainer(_cfg(data, straight, epochs=2), show_progress=False).run()
    split = tmp_path / "split"
    end_epoch = Trainer._end_epoch

    def crash_after_first_epoch(self, epoch, losses, seconds):
        end_epoch(self, epoch, losses, seconds)
        raise KeyboardInterrupt  # as if the machine went down right after epoch 1 was saved

    with monkeypatch.context() as m:
        m.setattr(Trainer, "_end_epoch", crash_after_first_epoch)
        with pytest.raises(KeyboardInterrupt):
            Trainer(_cfg(data, split, epochs=2), show_progress=False).run()
    Trainer(_cfg(data, split, epochs=2), resume=True, show_progress=False).run()
    a = load_checkpoint(straight / "last.safetensors").model.state_dict()
    b = load_checkpoint(split / "last.safetensors").model.state_dict()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6, msg=k)
    rows = (split / "results.jsonl").read_text().splitlines()
    assert len(rows) == 2


def test_nan_guard_stops_and_keeps_last_good_checkpoint(data, tmp_path, monkeypatch):
    out = tmp_path / "run"
    Trainer(_cfg(data, out, epochs=1), show_progress=False).run()
    good = (out / "last.safetensors").read_bytes()
    trainer = Trainer(_cfg(data, out, epochs=2), resume=True, show_progress=False)
    original = Trainer._prepare

    def prepare_then_poison(self):
        original(self)
        real_loss = self.loss

        def poisoned(raw, targets):
            total, parts = real_loss(raw, targets)
            return total * float("nan"), parts

        self.loss = poisoned

    monkeypatch.setattr(Trainer, "_prepare", prepare_then_poison)
    with pytest.raises(TrainingDiverged, match="loss became nan at epoch 2, step 1"):
        trainer.run()
    assert (out / "last.safetensors").read_bytes() == good


@pytest.mark.slow
def test_distributed_training_on_two_cpu_processes(data, tmp_path):
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29533",
           "-m", "app", "train", "--data", str(data), "--out", str(out), "--width", "0.125", "--img", "64",
           "--epochs", "1", "--batch", "4", "--workers", "0", "--quiet", "--device", "cpu"]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (out / "last.safetensors").is_file()
    rows = (out / "results.jsonl").read_text().splitlines()
    assert len(rows) == 1  # only rank 0 logs


def test_training_mines_negatives_takes_a_folder_and_reweights_hard_ones(data, tmp_path, capsys, monkeypatch):
    normal = tmp_path / "normal"
    normal.mkdir()
    import cv2
    import numpy as np
    for i in range(3):
        cv2.imwrite(str(normal / f"{i}.png"), np.full((80, 90, 3), (40, 50, 150), np.uint8))
    out = tmp_path / "run"
    cfg = _cfg(data, out, epochs=3, negatives=str(normal), negative_fraction=0.5,
               hard_negatives_from=0.0, hard_negatives_every=1)
    trainer = Trainer(cfg, show_progress=False)
    trainer.run()
    said = capsys.readouterr().err
    mined = len([s for s in trainer.negative_cache.samples if s.id.endswith("#background")])
    assert mined > 0 and len(trainer.negative_cache) == mined + 3
    assert f"polyp-free items ({trainer.sampler.negatives_per_epoch} drawn per epoch)" in said
    newest, before = json.loads((out / "negative_weights.json").read_text())["sets"]
    assert (newest["epoch"], before["epoch"]) == (2, 1)  # the set before is kept for a stop between the writes
    weights = newest
    assert set(weights["weights"]) == {s.id for s in trainer.negative_cache.samples}
    assert all(w >= 1.0 for w in weights["weights"].values())
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert all(0 <= r["val_alarm_frames_r90"] <= 1 for r in rows)
    # A resumed run samples its first epoch with the saved weights.
    resumed = Trainer(dataclasses.replace(cfg, epochs=4), resume=True, show_progress=False)
    seen = []
    train_epoch = Trainer._train_epoch

    def spy(self, epoch):
        seen.append(self.sampler.negative_weights.copy())
        return train_epoch(self, epoch)

    monkeypatch.setattr(Trainer, "_train_epoch", spy)
    resumed.run()
    saved = [weights["weights"][s.id] for s in resumed.negative_cache.samples]
    np.testing.assert_allclose(seen[0], saved)


def test_a_run_saved_before_negatives_existed_resumes_with_its_own_recipe():
    old = {k: v for k, v in TrainConfig(data="d").to_dict().items()
           if k not in ("precision", "channels_last", "mine_negatives", "negatives", "negative_fraction")}
    old["augment"] = {k: v for k, v in old["augment"].items() if k in ("hsv_h", "scale", "mosaic")}
    cfg = TrainConfig.from_dict(old)
    assert (cfg.precision, cfg.channels_last, cfg.mine_negatives, cfg.negative_fraction) == ("fp32", False, False, 0.0)
    assert cfg.augment.zoom_out == 0.0 and cfg.augment.border == 0.0
    assert TrainConfig.from_dict(TrainConfig(data="d").to_dict()) == TrainConfig(data="d")


def test_hard_negative_weights_mined_after_the_resume_point_are_not_used(tmp_path):
    import numpy as np

    from training.loop.hard_negatives import load_weights, save_weights
    save_weights(tmp_path, 6, ["a", "b"], np.array([1.0, 1.0 + 4 * 0.123456789]))
    assert load_weights(tmp_path, ["b", "a"], 6).tolist() == [1.0 + 4 * 0.123456789, 1.0]  # full precision
    assert load_weights(tmp_path, ["a", "b"], 9) is not None      # mined earlier: still in use
    assert load_weights(tmp_path, ["a", "b"], 5) is None          # mined after the state it resumes
    assert load_weights(tmp_path, ["a", "c"], 6) is None          # other negatives


def test_resume_says_which_flags_it_ignores(tmp_path, train_configs, capsys):
    from app.cli import main

    run = tmp_path / "run"
    run.mkdir()
    (run / "train_config.json").write_text(json.dumps(TrainConfig(data="d", out=str(run), epochs=5).to_dict()))
    used = train_configs
    assert main(["train", "--out", str(run), "--resume", "--epochs", "8", "--lr", "0.1", "--ema-tau", "124"]) == 0
    err = capsys.readouterr().err
    assert "ignored: --lr, --ema-tau" in err
    assert (used[0].epochs, used[0].lr, used[0].ema_tau) == (8, TrainConfig.lr, 2000.0)  # only --epochs acts
