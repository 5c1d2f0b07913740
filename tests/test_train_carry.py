"""``polypscope train --stop-after-minutes --carry``: a run longer than a sitting stops
itself between epochs, is carried into a committed folder, and goes on from it on a new
checkout (no ``runs/``) exactly as if it had never stopped."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors import safe_open

from app.cli import main
from models import load_checkpoint
from training.loop.carry import RECORD, epochs_done

from .conftest import REPO
from .synthetic import write_kvasir_like

RECIPE = ["--width", "0.125", "--img", "64", "--epochs", "3", "--batch", "4", "--close-mosaic", "1",
          "--warmup-epochs", "0.5"]
PLACE = ["--workers", "0", "--threads", "1", "--quiet"]


def _dtypes(path, prefix=""):
    """The floating-point dtypes of a file's tensors (BatchNorm's batch counters are integers)."""
    with safe_open(str(path), "pt") as f:
        return {t.dtype for t in (f.get_tensor(k) for k in f.keys() if k.startswith(prefix)) if t.is_floating_point()}


def test_a_run_stops_at_its_deadline_is_carried_and_finishes_on_a_new_checkout(tmp_path, capsys, trained_epochs):
    data = write_kvasir_like(tmp_path / "kv", n=12)
    straight, out, record = tmp_path / "straight", tmp_path / "runs" / "long", tmp_path / "assets" / "long"
    assert main(["train", "--data", str(data), "--out", str(straight), *RECIPE, *PLACE]) == 0
    trained_epochs.clear()

    # A deadline already due still trains one epoch per call, then stops (status 3) and carries it.
    first = ["train", "--data", str(data), "--out", str(out), *RECIPE, *PLACE, "--carry", str(record)]
    assert main([*first, "--stop-after-minutes", "0"]) == 3
    captured = capsys.readouterr()
    assert "stopped at the deadline after epoch 1 of 3" in captured.err
    assert "carried" in captured.out and "not finished: go on with" in captured.out and trained_epochs == [0]
    assert epochs_done(record) == 1 and not json.loads((record / RECORD).read_text())["finished"]
    assert not (record / "last.safetensors").exists()  # rewritten from the state on resume
    assert _dtypes(record / "state.safetensors", "opt.") == {torch.float32}  # else another run
    assert _dtypes(record / "best.safetensors") == {torch.float16}
    after_one_epoch = tmp_path / "after-one-epoch"
    shutil.copytree(out, after_one_epoch)
    # Starting again without --resume would throw the carried epochs away: refused.
    with pytest.raises(SystemExit, match=r"holds a carried run \(1 epochs\); add --resume"):
        main(first)
    resume = ["train", "--out", str(out), "--resume", "--carry", str(record), *PLACE]
    with pytest.raises(SystemExit, match="--epochs 1: the run has done 1 epochs already"):
        main([*resume, "--epochs", "1"])

    # New checkouts: the work folder is gone each time, the committed record is not.
    for expected_epoch in (1, 2):
        shutil.rmtree(out)
        trained_epochs.clear()
        assert main([*resume, "--stop-after-minutes", "0"]) == (3 if expected_epoch == 1 else 0)
        assert f"({expected_epoch} epochs done)" in capsys.readouterr().out
        assert trained_epochs == [expected_epoch]  # went on; did not start again
    # Finished: the record keeps fp16 checkpoints and no state; the run equals the straight one.
    assert epochs_done(record) == 3 and json.loads((record / RECORD).read_text())["finished"]
    assert not (record / "state.safetensors").exists()
    assert _dtypes(record / "last.safetensors") == {torch.float16}
    a = load_checkpoint(straight / "last.safetensors").model.state_dict()
    b = load_checkpoint(out / "last.safetensors").model.state_dict()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6, msg=k)
    assert len((out / "results.jsonl").read_text().splitlines()) == 3
    # Restored over a work folder left at epoch 1, the finished record wins: the old state is
    # removed, nothing is trained again and the final checkpoint stays the final one. It
    # cannot be lengthened: it keeps no state to go on from.
    shutil.rmtree(out)
    shutil.copytree(after_one_epoch, out)
    with pytest.raises(SystemExit, match="finished at 3 epochs and keeps no training state"):
        main([*resume, "--epochs", "5"])
    trained_epochs.clear()
    assert main(resume) == 0 and trained_epochs == []
    assert not (out / "state.safetensors").exists()
    assert load_checkpoint(out / "last.safetensors").metadata["epoch"] == 3


def test_an_interrupted_run_is_carried_and_another_run_is_never_mixed_in(tmp_path, capsys, monkeypatch):
    from training.loop.trainer import Trainer

    data = write_kvasir_like(tmp_path / "kv", n=12)
    out, record = tmp_path / "runs" / "a", tmp_path / "assets" / "a"
    original_end = Trainer._end_epoch

    def interrupted_after_first_epoch(self, epoch, *rest):
        original_end(self, epoch, *rest)
        raise KeyboardInterrupt  # the sitting ends here: the state of epoch 1 is on disk
    monkeypatch.setattr(Trainer, "_end_epoch", interrupted_after_first_epoch)
    fresh = ["train", "--data", str(data), "--out", str(out), *RECIPE, *PLACE]
    assert main([*fresh, "--carry", str(record)]) == 130
    assert "interrupted" in capsys.readouterr().err
    assert epochs_done(record) == 1
    monkeypatch.setattr(Trainer, "_end_epoch", original_end)
    # A fresh --carry run into a folder that holds a run would record that run under its recipe.
    with pytest.raises(SystemExit, match="holds a run \\(1 epochs\\) that --carry would record"):
        main([*fresh, "--carry", str(tmp_path / "assets" / "b")])
    # A work folder holding another run (another learning rate), as far along as the record, is
    # neither overwritten with it nor recorded over it.
    other = tmp_path / "runs" / "other"
    shutil.copytree(out, other)
    recipe = json.loads((other / "train_config.json").read_text())
    (other / "train_config.json").write_text(json.dumps({**recipe, "out": str(other), "lr": 0.01}))
    stamp = (record / RECORD).stat().st_mtime_ns
    with pytest.raises(SystemExit, match="other settings.*carried record"):
        main(["train", "--out", str(other), "--resume", "--carry", str(record), *PLACE])
    assert (record / RECORD).stat().st_mtime_ns == stamp
    # A folder that is, holds or lies in the work folder, or holds anything else, is never
    # made a record: a carry replaces the folder it is given.
    for wrong in (out / "record", out, out.parent):
        with pytest.raises(SystemExit, match="must lie outside --out"):
            main(["train", "--out", str(out), "--resume", "--carry", str(wrong), *PLACE])
    notes = tmp_path / "assets" / "notes"
    notes.mkdir()
    (notes / "keep.txt").write_text("not a record")
    with pytest.raises(SystemExit, match="holds files that are not a carried run"):
        main(["train", "--out", str(out), "--resume", "--carry", str(notes), *PLACE])
    assert (notes / "keep.txt").read_text() == "not a record"
    # A record caught half-way through its replacement: the broken new one is thrown away,
    # the whole previous one is used and replaced.
    previous = record.with_name("a.previous")
    record.rename(previous)
    record.mkdir()
    (record / "train_config.json").write_text("{")  # a copy cut off: no carried.json yet
    assert main(["train", "--out", str(out), "--resume", "--carry", str(record), *PLACE,
                 "--stop-after-minutes", "0"]) == 3
    assert epochs_done(record) == 2 and (record / RECORD).is_file() and not previous.exists()


def test_a_killed_run_with_loader_workers_is_carried(tmp_path):
    """A time limit kills the whole process group, data-loading workers included: the carry
    must still happen (torch's "worker killed" error once stopped every carry)."""
    data = write_kvasir_like(tmp_path / "kv", n=12)
    out, record = tmp_path / "runs" / "k", tmp_path / "assets" / "k"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-m", "app", "train", "--data", str(data), "--out", str(out),
                             *RECIPE[:4], "--epochs", "200", *RECIPE[6:], "--workers", "1", "--threads", "1",
                             "--quiet", "--carry", str(record)],
                            env=env, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        give_up = time.monotonic() + 300
        while not (out / "state.safetensors").is_file():  # written whole (atomically) at each epoch's end
            assert proc.poll() is None, proc.stdout.read().decode()
            assert time.monotonic() < give_up, "no epoch finished in five minutes"
            time.sleep(0.5)
        os.killpg(proc.pid, signal.SIGTERM)
        output = proc.communicate(timeout=120)[0].decode()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
    assert proc.returncode == 128 + signal.SIGTERM, output
    assert "could not carry" not in output and "carried" in output, output
    assert epochs_done(record) >= 1


def test_a_sigterm_exits_143_and_carries_wherever_it_lands(tmp_path, monkeypatch):
    """A SIGTERM that lands inside an extension module's import surfaces as ``ImportError:
    initialization failed``, not as the handler's ``SystemExit`` (seen at the end of an
    epoch, during matplotlib's first import). The run must still be carried and exit with
    the signal's status, wherever the signal lands: here it lands, deterministically, in
    code that turns it into that error."""
    import training.cli as cli
    import training.loop.carry as carry

    carried = []

    class KilledMidImport:
        stopped_early = False

        def __init__(self, cfg, resume, show_progress, deadline=None):
            pass

        def run(self):
            try:
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(5)  # the handler raises before this ends
            except SystemExit as exc:
                raise ImportError("initialization failed") from exc
            raise AssertionError("the SIGTERM handler did not run")

    monkeypatch.setattr(cli, "Trainer", KilledMidImport)
    monkeypatch.setattr(carry, "carry_after_run", lambda out, record, epochs: carried.append(record) or True)
    before = signal.getsignal(signal.SIGTERM)
    out, record = tmp_path / "runs" / "k", tmp_path / "assets" / "k"
    with pytest.raises(SystemExit) as stop:
        main(["train", "--data", "d", "--out", str(out), "--carry", str(record)])
    assert stop.value.code == 128 + signal.SIGTERM
    assert carried == [record]
    assert signal.getsignal(signal.SIGTERM) == before  # the handler is put back
