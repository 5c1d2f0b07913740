"""The pruning study: variants and grids, the statistics by hand, the choice rule, and one
tiny study run end to end (resumable, stopped by its deadline, reported, timed)."""

import argparse
import json
import time

import pytest

from training.prune_study.__main__ import main
from training.prune_study.report import (
    cells_table,
    choose_default,
    compare,
    comparisons_table,
    progress_note,
    summarise_cells,
)
from training.prune_study.runner import StudySettings, paths, run_all
from training.prune_study.scoring import flattened, gain_over_last_quarter
from training.prune_study.statistics import mean_sd, paired_difference, t95, unpaired_difference, verdict
from training.prune_study.variants import GRIDS, Variant, expand

from .synthetic import write_kvasir_like


def test_variants_parse_name_and_expand_over_seeds():
    v = Variant.parse("taylor-gate:0.5:global", seed=2)
    assert (v.method, v.ratio, v.scope, v.seed) == ("taylor-gate", 0.5, "global", 2)
    assert v.cell == "taylor-gate-global-0.5" and v.name == "taylor-gate-global-0.5-s2"
    assert Variant.parse(str(v)) == Variant("taylor-gate", 0.5, "global", 0)
    for bad in ("taylor", "magic:0.5", "taylor:1.5", "scratch:0.5:global"):
        with pytest.raises(argparse.ArgumentTypeError):
            Variant.parse(bad)
    runs = expand(GRIDS["reduced"], [0, 1, 2])
    assert len(runs) == 12 and [r.seed for r in runs[:4]] == [0] * 4  # seed-major: whole seeds first
    assert len({r.name for r in expand(GRIDS["full"], [0, 1, 2])}) == (5 * 3 + 3) * 3


def test_statistics_by_hand():
    assert mean_sd([1.0, 2.0, 3.0]) == {"mean": 2.0, "sd": 1.0, "n": 3}
    assert t95(2) == 4.303 and t95(11) == 2.228 and t95(100) == 2.0 and t95(500) == 1.96
    # Taylor beats random by 0.10, 0.05, 0.10 with the same seeds: mean 0.0833, sd 0.0289,
    # half-width 4.303 * 0.0289 / sqrt(3) = 0.0717.
    a, b = {0: 0.80, 1: 0.70, 2: 0.90}, {0: 0.70, 1: 0.65, 2: 0.80}
    d = paired_difference(a, b)
    assert d["mean"] == pytest.approx(0.08333, abs=1e-4) and d["sd"] == pytest.approx(0.028868, abs=1e-5)
    assert d["ci95"] == pytest.approx([0.08333 - 0.07172, 0.08333 + 0.07172], abs=1e-4)
    assert verdict(d, "taylor", "random").startswith("taylor is better")
    # Pairing matters: the seed effect (0.7 .. 0.9) swamps the difference when unpaired.
    unpaired = mean_sd(list(a.values()))["sd"]
    assert unpaired > 3 * d["sd"]
    assert verdict(paired_difference({0: 0.8, 1: 0.7}, {0: 0.7, 1: 0.8}), "x", "y").startswith("no difference")
    assert paired_difference({0: 0.8}, {0: 0.7}) is None and verdict(None, "x", "y") == "not enough seeds to say"


def test_a_one_seed_control_is_compared_unpaired_against_the_cells_spread():
    # Taylor 0.90, 0.91, 0.92 (sd 0.01) against one scratch run: pooled sd 0.01 on 2 degrees
    # of freedom, half-width 4.303 * 0.01 * sqrt(1/3 + 1) = 0.04969.
    d = unpaired_difference([0.90, 0.91, 0.92], [0.88])
    assert d["mean"] == pytest.approx(0.03) and d["sd"] == pytest.approx(0.01)
    assert d["ci95"] == pytest.approx([0.03 - 0.04969, 0.03 + 0.04969], abs=1e-4)
    assert verdict(d, "taylor", "scratch").startswith("no difference")
    assert verdict(unpaired_difference([0.90, 0.91, 0.92], [0.80]), "taylor", "scratch").startswith("taylor is better")
    assert unpaired_difference([0.9], [0.8]) is None  # no spread to judge by
    results = [{"scope": "uniform", "method": m, "ratio": 0.5, "seed": seed, "after_training": {"val": {"ap50": v}}}
               for m, seed, v in (("taylor", 0, 0.90), ("taylor", 1, 0.91), ("taylor", 2, 0.92), ("scratch", 0, 0.80))]
    (row,) = [c for c in compare(results) if c["b"] == "scratch"]
    assert row["difference"]["kind"] == "unpaired" and row["verdict"].startswith("taylor is better")
    assert "assuming both vary alike" in row["verdict"]
    assert "3 vs 1 (unpaired)" in comparisons_table([row])


def test_a_curve_has_flattened_when_its_last_quarter_adds_under_a_point():
    rising = [{"epoch": i, "val_ap50": 0.05 * i} for i in range(1, 13)]
    flat = [{"epoch": i, "val_ap50": min(0.5, 0.1 * i)} for i in range(1, 13)]
    assert not flattened(rising) and flattened(flat) and not flattened(flat[:5])
    # One lucky early epoch must not make a rising curve "flat": the last quarter's mean
    # (0.55) is 5 points above the quarter before (0.50), though its best (0.56) is below 0.70.
    lucky = [{"epoch": i, "val_ap50": v} for i, v in
             enumerate([0.3, 0.70, 0.4, 0.45, 0.48, 0.49, 0.50, 0.51, 0.49, 0.54, 0.55, 0.56], start=1)]
    assert not flattened(lucky)
    assert gain_over_last_quarter(lucky) == pytest.approx(0.05) and gain_over_last_quarter(lucky[:7]) is None


def _result(method, seed, val, test=None, gflops=0.4, ratio=0.5):
    v = Variant(method, ratio, seed=seed)
    scores = {"val": {"ap50": val, "ap50_95": val / 2}}
    if test is not None:
        scores["test"] = {"ap50": test, "ap50_95": test / 2}
    return {"name": v.name, "cell": v.cell, "method": method, "ratio": ratio, "scope": "uniform", "seed": seed,
            "gflops": gflops, "params": 1000, "epochs_done": 2, "finished": True, "flattened": False,
            "after_training": scores}


def test_default_is_the_best_mean_val_pruned_cell_never_scratch_never_test():
    results = [_result("taylor", s, v, test=0.99) for s, v in enumerate([0.80, 0.82, 0.78])]
    results += [_result("random", s, v, test=0.10) for s, v in enumerate([0.83, 0.81, 0.82])]
    results += [_result("scratch", s, 0.95) for s in range(3)]
    results += [_result("l1", s, 0.99, gflops=0.6) for s in range(3)]  # too many FLOPs
    cells = summarise_cells(results)
    assert cells["random-uniform-0.5"]["val_ap50"]["mean"] == pytest.approx(0.82)
    assert cells["taylor-uniform-0.5"]["test_ap50"]["mean"] == pytest.approx(0.99)
    assert choose_default(1.0, cells)["cell"] == "random-uniform-0.5"
    # The choice waits for every pruned run: not made while one still trains (the control may).
    assert choose_default(1.0, cells, ["taylor-uniform-0.5-s3"]) is None
    assert choose_default(1.0, cells, ["scratch-uniform-0.5-s1"])["cell"] == "random-uniform-0.5"
    note = progress_note(10, [{"name": "taylor-uniform-0.5-s3", "epochs_done": 20, "val_ap50_last_epoch": 0.5}],
                         ["random-uniform-0.5-s3"])
    assert note.startswith("**Interim: 8 of 10 runs finished.**") and "20 epochs so far" in note
    assert "random-uniform-0.5-s3: not started" in note and progress_note(10, [], []) == ""
    assert "no default is chosen until every pruned run has finished" in note
    control_only = progress_note(10, [{"name": "scratch-uniform-0.5-s0", "epochs_done": 20, "val_ap50_last_epoch": 0.5}],
                                 [])
    assert "the rule's default stands" in control_only  # the control takes no part in the rule
    comparisons = {(c["a"], c["b"]): c for c in compare(results)}
    assert comparisons[("taylor", "random")]["difference"]["mean"] == pytest.approx(-0.02)
    assert comparisons[("taylor", "scratch")]["verdict"].startswith("scratch is better")
    assert ("taylor-gate", "random") not in comparisons  # no cell, no row
    baseline = {"gflops": 1.0, "val": {"ap50": 0.9, "ap50_95": 0.5}, "test": {"ap50": 0.8, "ap50_95": 0.4}}
    rows = cells_table(baseline, cells, {"baseline": {"p50": 10.0}, "ratio-0.5": {"p50": 4.0}}).splitlines()
    assert len(rows) == 2 + 1 + 4
    assert any("| random-uniform-0.5 | 0,1,2 | 0.400 (60%) |" in r and "0.820 ± 0.010" in r and "| 4.00 |" in r
               for r in rows)
    assert "taylor − random" in comparisons_table(compare(results))


@pytest.mark.slow
def test_study_runs_resumes_stops_at_its_deadline_and_reports(tmp_path, capsys, monkeypatch):
    data = write_kvasir_like(tmp_path / "kv", n=12)
    from training.loop.trainer import TrainConfig, Trainer

    Trainer(TrainConfig(data=str(data), out=str(tmp_path / "base"), width=0.125, img=64, epochs=1, batch=4,
                        workers=0, threads=1), show_progress=False).run()
    base = tmp_path / "base" / "last.safetensors"
    common = ["--weights", str(base), "--data", str(data), "--out", str(tmp_path / "study"), "--docs",
              str(tmp_path / "docs"), "--finetune-epochs", "1", "--workers", "0",
              "--threads", "1", "--quiet"]
    assert main([*common, "--variants", "taylor-gate:0.5", "scratch:0.5", "--seeds", "0", "1"]) == 0
    study = json.loads((tmp_path / "study" / "study.json").read_text())
    assert sorted(v["name"] for v in study["variants"]) == [
        "scratch-uniform-0.5-s0", "scratch-uniform-0.5-s1", "taylor-gate-uniform-0.5-s0", "taylor-gate-uniform-0.5-s1"]
    for v in study["variants"]:
        assert v["gflops"] < 0.6 * study["baseline"]["gflops"] and "test" not in v["after_training"]
        assert len(v["curve"]) == (2 if v["method"] == "scratch" else 1)
    gate, scratch = study["cells"]["taylor-gate-uniform-0.5"], study["cells"]["scratch-uniform-0.5"]
    assert gate["gflops"] == scratch["gflops"] and gate["seeds"] == [0, 1]
    from models import load_checkpoint

    pruned = load_checkpoint(tmp_path / "study" / "taylor-gate-uniform-0.5-s0" / "pruned.safetensors").config
    control = load_checkpoint(tmp_path / "study" / "scratch-uniform-0.5-s1" / "init.safetensors").config
    assert control.channels == pruned.channels  # the control has the pruned network's widths, layer by layer
    # taylor-gate - scratch, paired over 2 seeds, on AP50 and AP50-95
    assert [(c["metric"], c["difference"]["n"]) for c in study["comparisons"]] == [("ap50", 2), ("ap50_95", 2)]
    assert study["default"] == "taylor-gate-uniform-0.5"
    for name in ("pruning_table.md", "pruning_curves.png", "pruning_tradeoff.png", "study.json"):
        assert (tmp_path / "docs" / name).stat().st_size > 500, name
    assert study["complete"] and json.loads((tmp_path / "docs" / "study.json").read_text())["default"] == study["default"]
    # Resumable: finished variants are not run again.
    done = tmp_path / "study" / "taylor-gate-uniform-0.5-s0" / "done.json"
    stamp = done.stat().st_mtime_ns
    assert main([*common, "--variants", "taylor-gate:0.5", "--seeds", "0", "--phase", "run"]) == 0
    assert done.stat().st_mtime_ns == stamp
    # Timed on the runtime side, then shown by the next report.
    from engine.benchmarks.study_latency import measure

    latency = measure(tmp_path / "study", iterations=3, show_progress=False)
    assert set(latency) == {"baseline", "ratio-0.5"} and latency["ratio-0.5"]["p50"] > 0
    assert main([*common, "--variants", "taylor-gate:0.5", "scratch:0.5", "--seeds", "0", "1",
                 "--phase", "report", "--score-test"]) == 0
    table = (tmp_path / "docs" / "pruning_table.md").read_text()
    assert "inference p50 ms" in table and "test AP50" in table
    # Latency measured after test was scored: redrawn from the record, scoring nothing.
    import training.prune_study.__main__ as study_main

    (tmp_path / "study" / "latency.json").write_text(json.dumps(
        {k: {**v, "p50": 12.34} for k, v in latency.items()}))
    with monkeypatch.context() as m:
        for name in ("score_variant", "evaluate"):
            m.setattr(study_main, name, lambda *a, **k: pytest.fail("redraw must not score"))
        assert main([*common, "--phase", "redraw"]) == 0
    redrawn = (tmp_path / "docs" / "pruning_table.md").read_text()
    assert "12.34" in redrawn and "test AP50" in redrawn and "12.34" not in table
    assert json.loads((tmp_path / "docs" / "study.json").read_text())["latency"]["baseline"]["p50"] == 12.34
    # A deadline stops a long run as a process group, leaves it unfinished and resumable.
    settings = StudySettings(base, data, tmp_path / "study", finetune_epochs=500, workers=1, threads=1)
    long = Variant("random", 0.5, seed=7)
    started = time.time()
    assert run_all(settings, [long], jobs=1, deadline=time.time() + 25) == []
    assert time.time() - started < 70
    assert not paths(settings, long).done.is_file() and paths(settings, long).log.is_file()
    assert "stopped random-uniform-0.5-s7 at the deadline" in capsys.readouterr().out
    assert not _processes_mentioning(str(tmp_path / "study"))  # the child and its loader workers are gone
    # An interim report scores only finished runs, lists the others, chooses nothing, and
    # will not spend the one test scoring. The control runs only the seeds asked of it.
    interim = [*common, "--variants", "taylor-gate:0.5", "scratch:0.5", "random:0.5", "--seeds", "0", "7",
               "--scratch-seeds", "0", "--phase", "report"]
    assert main(interim) == 0
    study = json.loads((tmp_path / "docs" / "study.json").read_text())
    assert sorted(v["name"] for v in study["variants"]) == ["scratch-uniform-0.5-s0", "taylor-gate-uniform-0.5-s0"]
    waiting = [w["name"] for w in study["in_progress"]] + study["not_started"]
    assert sorted(waiting) == ["random-uniform-0.5-s0", "random-uniform-0.5-s7", "taylor-gate-uniform-0.5-s7"]
    assert not study["complete"] and study["default"] is None
    assert (tmp_path / "docs" / "pruning_table.md").read_text().startswith("**Interim: 2 of 5 runs finished.**")
    with pytest.raises(SystemExit, match="3 of 5 runs have not finished"):
        main([*interim, "--score-test"])
    with pytest.raises(SystemExit, match="already scored"):  # test is scored once
        main([*common, "--variants", "taylor-gate:0.5", "--seeds", "0", "--phase", "report", "--score-test"])


def test_redraw_needs_a_record_and_a_latency_and_draws_from_them(tmp_path, capsys):
    from training.prune_study.__main__ import redraw

    settings = StudySettings(tmp_path / "base.safetensors", tmp_path, tmp_path / "study")
    settings.out.mkdir()
    docs = tmp_path / "docs"
    with pytest.raises(SystemExit, match="no study record to redraw"):
        redraw(settings, docs)
    docs.mkdir()
    from tests.conftest import REPO

    record = json.loads((REPO / "docs" / "pruning-study" / "study60" / "study.json").read_text())  # the real one
    assert record["test_scored"]
    record["latency"] = None  # as it was before latency was measured; the committed record may have it by now
    (docs / "study.json").write_text(json.dumps(record))
    with pytest.raises(SystemExit, match="no latency measured"):
        redraw(settings, docs)
    (settings.out / "latency.json").write_text(json.dumps({"baseline": {"p50": 7.77, "p99": 9.0},
                                                           "ratio-0.5": {"p50": 3.33, "p99": 4.0}}))
    redraw(settings, docs)
    table = (docs / "pruning_table.md").read_text()
    assert "inference p50 ms" in table and "3.33" in table and "7.77" in table
    assert "test AP50" in table  # the recorded test figures stay
    assert (docs / "pruning_tradeoff.png").stat().st_size > 500 and (docs / "pruning_curves.png").is_file()
    for folder in (settings.out, docs):
        assert json.loads((folder / "study.json").read_text())["latency"]["ratio-0.5"]["p50"] == 3.33


def _processes_mentioning(text: str) -> list[int]:
    from pathlib import Path

    found = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and text in (proc / "cmdline").read_bytes().decode(errors="replace"):
                found.append(int(proc.name))
        except OSError:
            continue
    return found


def test_the_control_can_copy_the_first_stage_of_a_baseline_trained_in_stages(tmp_path):
    from training.loop.trainer import TrainConfig
    from training.prune_study.runner import scratch_config

    stage1 = tmp_path / "train_config.json"
    stage1.write_text(json.dumps(TrainConfig(data="d", lr=0.002, epochs=90, img=320).to_dict()))
    settings = StudySettings(tmp_path / "baseline.safetensors", tmp_path / "data", tmp_path / "study",
                             finetune_epochs=30, scratch_epochs=180, scratch_recipe=stage1, workers=0)
    cfg = scratch_config(settings, Variant("scratch", 0.5, seed=2), tmp_path / "init.safetensors", tmp_path / "run")
    assert (cfg.lr, cfg.epochs, cfg.img, cfg.seed) == (0.002, 180, 320, 2)
    assert cfg.init_weights == str(tmp_path / "init.safetensors") and cfg.data == str(tmp_path / "data")
    assert not cfg.fit_anchors and cfg.distill_from is None


def test_a_missing_scratch_recipe_is_named_before_anything_runs(tmp_path):
    with pytest.raises(SystemExit, match="nope.json: no such train_config.json for the from-scratch control"):
        main(["--weights", str(tmp_path / "w.safetensors"), "--data", str(tmp_path), "--out", str(tmp_path / "s"),
              "--scratch-recipe", str(tmp_path / "nope.json")])


def test_the_fine_tunes_average_reaches_each_child_and_its_trainer(tmp_path, monkeypatch):
    import training.prune_study.runner as runner

    started = []
    monkeypatch.setattr(runner, "start_group", lambda cmd, log: started.append(cmd))
    settings = StudySettings(tmp_path / "w.safetensors", tmp_path / "data", tmp_path / "study",
                             ema_decay=0.995, ema_tau=124.0)
    runner._start_child(settings, Variant("taylor", 0.5, seed=1))
    cmd = started[0]
    assert cmd[cmd.index("--ema-decay") + 1] == "0.995" and cmd[cmd.index("--ema-tau") + 1] == "124.0"
    plain = StudySettings(tmp_path / "w.safetensors", tmp_path / "data", tmp_path / "study")
    runner._start_child(plain, Variant("taylor", 0.5, seed=1))
    assert "--ema-decay" not in started[1]  # unset: the trainer's defaults, nothing passed
    # The child parses them back into its settings.
    seen = []
    monkeypatch.setattr("training.prune_study.__main__.run_all", lambda s, *a: seen.append(s) or [])
    (tmp_path / "data").mkdir()
    from models import YoloConfig, YOLOv3, save_checkpoint

    # The study records which network it prunes, so the baseline must be a real checkpoint.
    save_checkpoint(tmp_path / "w.safetensors", YOLOv3(YoloConfig(width=0.0625, input_size=64)), {})
    assert main(cmd[cmd.index("--phase"):]) == 0
    assert (seen[0].ema_decay, seen[0].ema_tau) == (0.995, 124.0)


def test_a_run_is_never_resumed_under_another_recipe(tmp_path):
    from training.loop.recipe import recipe_mismatch
    from training.loop.trainer import TrainConfig
    from training.prune_study.runner import _train

    run = tmp_path / "run"
    run.mkdir()
    started = TrainConfig(data="d", out=str(run), epochs=30, lr=0.001)
    (run / "train_config.json").write_text(json.dumps(started.to_dict()))
    (run / "last.safetensors").write_bytes(b"")  # a run that has saved an epoch
    moved = TrainConfig(data="elsewhere/d", out=str(run), epochs=30, lr=0.001, threads=2, device="cuda")
    assert recipe_mismatch(started, moved) == []  # where it runs may change between sittings
    other = TrainConfig(data="d", out=str(run), epochs=30, lr=0.001, ema_decay=0.995, ema_tau=124.0)
    assert recipe_mismatch(started, other) == ["ema_decay", "ema_tau"]
    with pytest.raises(SystemExit, match=r"train_config.json: this run was started with other settings "
                                         r"\(ema_decay, ema_tau\)"):
        _train(other, show_progress=False)


def test_a_study_refuses_a_second_baseline_but_not_the_same_one_reshipped(tmp_path):
    import hashlib

    import torch

    from models import YoloConfig, YOLOv3, save_checkpoint
    from training.prune_study.runner import check_baseline

    torch.manual_seed(0)
    net = YOLOv3(YoloConfig(width=0.0625, input_size=64))
    first = save_checkpoint(tmp_path / "a.safetensors", net, {"note": "as trained"})
    check_baseline(tmp_path / "study", first)
    check_baseline(tmp_path / "study", first)  # the same baseline again: fine
    save_checkpoint(first, net, {"note": "re-shipped", "operating_threshold": 0.2})  # new header, same tensors
    check_baseline(tmp_path / "study", first)
    other_anchors = YOLOv3(YoloConfig(width=0.0625, input_size=64,
                                      anchors=tuple((w * 1.5, h * 1.5) for w, h in net.config.anchors)))
    other_anchors.load_state_dict(net.state_dict())  # the same tensors, another box decode
    with pytest.raises(SystemExit, match="prunes another baseline"):
        check_baseline(tmp_path / "study", save_checkpoint(tmp_path / "c.safetensors", other_anchors, {}))
    with torch.no_grad():
        next(net.parameters())[0].add_(1.0)  # one weight changed: another network
    second = save_checkpoint(tmp_path / "b.safetensors", net, {"note": "as trained"})
    with pytest.raises(SystemExit, match="prunes another baseline"):
        check_baseline(tmp_path / "study", second)
    with pytest.raises(SystemExit, match="no such baseline"):
        check_baseline(tmp_path / "study", tmp_path / "missing.safetensors")
    # a record written before the tensor digest (file SHA only) is upgraded in place
    old = tmp_path / "old-study"
    old.mkdir()
    (old / "baseline.json").write_text(json.dumps({"weights": str(second),
                                                   "sha256": hashlib.sha256(second.read_bytes()).hexdigest()}))
    check_baseline(old, second)
    assert "network_sha256" in json.loads((old / "baseline.json").read_text())


def test_a_finished_variant_is_archived_compactly_and_outlives_its_work_folder(tmp_path, capsys):
    import shutil

    import torch
    from safetensors import safe_open

    from models import load_checkpoint
    from training.loop.trainer import TrainConfig, Trainer
    from training.prune_study.archive import archive_variant
    from training.prune_study.scoring import evaluate

    data = write_kvasir_like(tmp_path / "kv", n=12)
    Trainer(TrainConfig(data=str(data), out=str(tmp_path / "base"), width=0.125, img=64, epochs=1, batch=4,
                        workers=0, threads=1), show_progress=False).run()
    study, archive = tmp_path / "study", tmp_path / "archive"
    common = ["--weights", str(tmp_path / "base" / "last.safetensors"), "--data", str(data), "--out", str(study),
              "--docs", str(tmp_path / "docs"), "--finetune-epochs", "1", "--workers", "0", "--threads", "1",
              "--quiet"]
    one = ["--variants", "taylor:0.5", "--seeds", "0"]
    assert main([*common, *one, "--phase", "run"]) == 0  # finished before any archive was named
    work = study / "taylor-uniform-0.5-s0"
    assert main([*common, *one, "--phase", "run", "--archive", str(archive)]) == 0
    assert "archived taylor-uniform-0.5-s0" in capsys.readouterr().out
    kept = archive / "taylor-uniform-0.5-s0"
    record = ["before_training.json", "done.json", "finetune/last.safetensors", "finetune/results.csv",
              "finetune/train_config.json"]
    assert sorted(str(p.relative_to(kept)) for p in kept.rglob("*") if p.is_file()) == record
    assert not list(archive.glob(".*"))  # no staging folder left behind
    with safe_open(str(kept / "finetune" / "last.safetensors"), "pt") as f:
        dtypes = {f.get_tensor(k).dtype for k in f.keys()}
    assert torch.float16 in dtypes and torch.float32 not in dtypes
    full, half = load_checkpoint(work / "finetune" / "last.safetensors"), load_checkpoint(kept / "finetune" / "last.safetensors")
    assert half.config == full.config and half.metadata == full.metadata
    for name, t in full.model.state_dict().items():
        assert torch.allclose(half.model.state_dict()[name].float(), t.float(), rtol=1e-3, atol=1e-4), name
    before = evaluate(work / "pruned.safetensors", data, "val")
    # Another recipe may not take the archived run as its own.
    with pytest.raises(SystemExit, match="other settings"):
        main([*common[:-7], "--finetune-epochs", "2", "--workers", "0", "--threads", "1", "--quiet", *one,
              "--phase", "run", "--archive", str(archive)])
    shutil.rmtree(study)  # the work folder is lost, as with a new checkout
    # A child process (deadline given) trains the new variant and archives it; the old one is done.
    assert main([*common, "--variants", "taylor:0.5", "random:0.5", "--seeds", "0", "--phase", "run",
                 "--archive", str(archive), "--stop-after-minutes", "5"]) == 0
    assert not (study / "taylor-uniform-0.5-s0").exists()  # done: nothing is trained again
    child = archive / "random-uniform-0.5-s0"
    assert sorted(str(p.relative_to(child)) for p in child.rglob("*") if p.is_file()) == record
    assert main([*common, *one, "--phase", "report", "--archive", str(archive)]) == 0
    (v,) = json.loads((study / "study.json").read_text())["variants"]
    assert v["finished"] and v["epochs_done"] == 1 and v["weights"].startswith(str(archive))
    assert v["before_training"]["val"] == before and set(v["after_training"]) == {"val"}
    # A record that would lack a part is refused, and the variant does not count as done.
    (study / "random-uniform-0.5-s1" / "finetune").mkdir(parents=True)
    (study / "random-uniform-0.5-s1" / "done.json").write_text("{}")
    from training.prune_study.runner import StudySettings, finished

    settings = StudySettings(tmp_path / "base" / "last.safetensors", data, study, archive=archive)
    with pytest.raises(ValueError, match="missing"):
        archive_variant(settings, Variant("random", 0.5, seed=1))
    assert not finished(settings, Variant("random", 0.5, seed=1))
    # A finished run whose weights went missing stops the report instead of leaving its cell.
    (child / "finetune" / "last.safetensors").unlink()
    with pytest.raises(SystemExit, match="missing, though the run is marked finished"):
        main([*common, "--variants", "random:0.5", "--seeds", "0", "--phase", "report", "--archive", str(archive)])
    # A report without the archive, over a work folder that never had the runs, points to it.
    elsewhere = [tmp_path / "other" if a == str(study) else a for a in common]
    with pytest.raises(SystemExit, match="name the archive with --archive"):
        main([*map(str, elsewhere), *one, "--phase", "report"])


def test_an_unfinished_run_is_carried_across_sittings_and_resumes_where_it_stopped(tmp_path, monkeypatch, capsys,
                                                                                     request):
    """A sitting ends with the control half-trained and the next one starts on a new checkout
    (no work folder): with --carry the run resumes at the epoch it had, not at zero."""
    import shutil

    import torch
    from safetensors import safe_open

    from training.loop.trainer import TrainConfig, Trainer
    from training.prune_study.carry import IN_PROGRESS, epochs_done

    data = write_kvasir_like(tmp_path / "kv", n=12)
    Trainer(TrainConfig(data=str(data), out=str(tmp_path / "base"), width=0.125, img=64, epochs=1, batch=4,
                        workers=0, threads=1), show_progress=False).run()
    study, archive = tmp_path / "study", tmp_path / "archive"
    args = ["--weights", str(tmp_path / "base" / "last.safetensors"), "--data", str(data), "--out", str(study),
            "--finetune-epochs", "1", "--workers", "0", "--threads", "1", "--quiet", "--archive", str(archive),
            "--variants", "scratch:0.5", "--seeds", "0", "--phase", "run"]  # the control: 1 + 1 epochs
    with pytest.raises(SystemExit, match="name it with --archive"):
        main([a for a in args if a not in ("--archive", str(archive))] + ["--carry"])

    original_end = Trainer._end_epoch

    def killed_after_first_epoch(self, epoch, *rest):
        original_end(self, epoch, *rest)
        raise KeyboardInterrupt  # the sitting ends here: the state of epoch 1 is on disk
    monkeypatch.setattr(Trainer, "_end_epoch", killed_after_first_epoch)
    with pytest.raises(KeyboardInterrupt):
        main([*args, "--carry"])
    monkeypatch.setattr(Trainer, "_end_epoch", original_end)
    record = archive / IN_PROGRESS / "scratch-uniform-0.5-s0"
    kept = sorted(str(p.relative_to(record)) for p in record.rglob("*") if p.is_file())
    assert {"carried.json", "train/state.safetensors", "train/best.safetensors", "train/results.csv",
            "train/train_config.json"} <= set(kept)
    assert "train/last.safetensors" not in kept and not any(k.endswith(".png") for k in kept)
    assert "init.safetensors" not in kept  # the control's random start is made again from its seed
    assert epochs_done(record / "train") == 1
    with safe_open(str(record / "train" / "state.safetensors"), "pt") as f:  # full precision, or another run
        assert {f.get_tensor(k).dtype for k in f.keys() if k.startswith("opt.")} == {torch.float32}
    with safe_open(str(record / "train" / "best.safetensors"), "pt") as f:  # never read by the study: fp16
        assert torch.float32 not in {f.get_tensor(k).dtype for k in f.keys()}
    # A work folder as far along as the record is left alone.
    from training.prune_study.carry import restore
    from training.prune_study.runner import StudySettings

    settings = StudySettings(tmp_path / "base" / "last.safetensors", data, study, finetune_epochs=1, archive=archive)
    work_state = study / "scratch-uniform-0.5-s0" / "train" / "state.safetensors"
    stamp = work_state.stat().st_mtime_ns
    assert not restore(settings, Variant("scratch", 0.5, seed=0), lambda start: pytest.fail("no recipe needed"))
    assert work_state.stat().st_mtime_ns == stamp
    # Nothing newer to carry: the record is left alone.
    stamp = (record / "carried.json").stat().st_mtime_ns
    assert main([*args[:-1], "carry"]) == 0 and (record / "carried.json").stat().st_mtime_ns == stamp
    assert "none had trained past its record" in capsys.readouterr().out

    shutil.rmtree(study)  # a new checkout: the work folder is gone, the archive (in git) is not
    # The sitting was cut off while that record was being replaced: it is found under its
    # previous name, and used.
    previous = record.with_name(record.name + ".previous")
    record.rename(previous)
    # Asked for another recipe, the run stops and names the record rather than mixing the two.
    with pytest.raises(SystemExit, match="carried progress of scratch-uniform-0.5-s0.*delete that folder"):
        main([*args, "--scratch-epochs", "3"])
    assert not (study / "scratch-uniform-0.5-s0" / "train" / "state.safetensors").exists()
    trained = request.getfixturevalue("trained_epochs")  # counted from here on
    assert main(args) == 0
    assert "restored scratch-uniform-0.5-s0" in capsys.readouterr().out
    assert trained == [1]  # only the second epoch: the run went on, it did not start again
    run = json.loads((archive / "scratch-uniform-0.5-s0" / "done.json").read_text())
    assert run["epochs"] == 2
    rows = (archive / "scratch-uniform-0.5-s0" / "train" / "results.csv").read_text().strip().splitlines()
    assert len(rows) == 1 + 2  # header, epoch 1 from the first sitting, epoch 2 from the second
    assert not record.exists() and not previous.exists()  # archived as finished: the carried progress is dropped
