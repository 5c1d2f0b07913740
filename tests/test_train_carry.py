"""``polypscope train --stop-after-minutes --carry``: a run longer than a sitting stops
itself between epochs, is carried into a committed folder, and goes on from it on a new
checkout (no ``runs/``) exactly as if it had never stopped."""

import json
import shutil

import pytest
import torch
from safetensors import safe_open

from app.cli import main
from models import load_checkpoint
from training.loop.carry import RECORD, epochs_done
from training.loop.trainer import Trainer

from .synthetic import write_kvasir_like

RECIPE = ["--width", "0.125", "--img", "64", "--epochs", "3", "--batch", "4", "--close-mosaic", "1",
          "--warmup-epochs", "0.5"]
PLACE = ["--workers", "0", "--threads", "1", "--quiet"]


def _dtypes(path, prefix=""):
    with safe_open(str(path), "pt") as f:
        return {f.get_tensor(k).dtype for k in f.keys() if k.startswith(prefix)}


def test_a_run_stops_at_its_deadline_is_carried_and_finishes_on_a_new_checkout(tmp_path, capsys, trained_epochs):
    data = write_kvasir_like(tmp_path / "kv", n=12)
    straight, out, record = tmp_path / "straight", tmp_path / "runs" / "long", tmp_path / "assets" / "long"
    assert main(["train", "--data", str(data), "--out", str(straight), *RECIPE, *PLACE]) == 0
    trained_epochs.clear()

    # A deadline already due still trains one epoch per call, then stops and carries it.
    first = ["train", "--data", str(data), "--out", str(out), *RECIPE, *PLACE, "--carry", str(record)]
    assert main([*first, "--stop-after-minutes", "0"]) == 0
    captured = capsys.readouterr()
    assert "stopped at the deadline after epoch 1 of 3" in captured.err
    assert "carried" in captured.out and trained_epochs == [0]
    assert epochs_done(record) == 1 and not json.loads((record / RECORD).read_text())["finished"]
    assert not (record / "last.safetensors").exists()  # rewritten from the state on resume
    assert _dtypes(record / "state.safetensors", "opt.") == {torch.float32}  # else another run
    assert torch.float32 not in _dtypes(record / "best.safetensors")
    # Starting again without --resume would throw the carried epochs away: refused.
    assert main(first) == 2
    assert "holds a carried run (1 epochs); add --resume" in capsys.readouterr().err

    # New checkouts: the work folder is gone each time, the committed record is not.
    resume = ["train", "--out", str(out), "--resume", "--carry", str(record), *PLACE]
    for expected_epoch in (1, 2):
        shutil.rmtree(out)
        trained_epochs.clear()
        assert main([*resume, "--stop-after-minutes", "0"]) == 0
        assert f"({expected_epoch} epochs done)" in capsys.readouterr().out
        assert trained_epochs == [expected_epoch]  # went on; did not start again
    # Finished: the record keeps fp16 checkpoints and no state; the run equals the straight one.
    assert epochs_done(record) == 3 and json.loads((record / RECORD).read_text())["finished"]
    assert not (record / "state.safetensors").exists()
    assert torch.float32 not in _dtypes(record / "last.safetensors")
    a = load_checkpoint(straight / "last.safetensors").model.state_dict()
    b = load_checkpoint(out / "last.safetensors").model.state_dict()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6, msg=k)
    assert len((out / "results.jsonl").read_text().splitlines()) == 3
    # A finished record restores into a new checkout and trains nothing more.
    shutil.rmtree(out)
    trained_epochs.clear()
    assert main(resume) == 0 and trained_epochs == []
    assert load_checkpoint(out / "last.safetensors").metadata["epoch"] == 3


def test_an_interrupted_run_is_carried_and_another_run_is_never_mixed_in(tmp_path, capsys, monkeypatch):
    data = write_kvasir_like(tmp_path / "kv", n=12)
    out, record = tmp_path / "runs" / "a", tmp_path / "assets" / "a"
    original_end = Trainer._end_epoch

    def interrupted_after_first_epoch(self, epoch, *rest):
        original_end(self, epoch, *rest)
        raise KeyboardInterrupt  # the sitting ends here: the state of epoch 1 is on disk
    monkeypatch.setattr(Trainer, "_end_epoch", interrupted_after_first_epoch)
    assert main(["train", "--data", str(data), "--out", str(out), *RECIPE, *PLACE, "--carry", str(record)]) == 130
    assert "interrupted" in capsys.readouterr().err
    assert epochs_done(record) == 1
    # A work folder started as another run (another learning rate) is not overwritten with it.
    other = tmp_path / "runs" / "b"
    other.mkdir()
    recipe = json.loads((record / "train_config.json").read_text())
    (other / "train_config.json").write_text(json.dumps({**recipe, "out": str(other), "lr": 0.01}))
    with pytest.raises(SystemExit, match="other settings.*carried record"):
        main(["train", "--out", str(other), "--resume", "--carry", str(record), *PLACE])
    assert epochs_done(other) == 0 and json.loads((other / "train_config.json").read_text())["lr"] == 0.01
