"""The pruning study: variant names, choice of the default, the table, and one tiny run."""

import argparse
import json

import pytest

from training.prune_study import Variant, choose_default, default_variants, main, table

from .synthetic import write_kvasir_like


def _result(name, gflops, val_ap50, test_ap50=0.5, finetuned=True):
    scores = {"ap50": test_ap50, "ap50_95": 0.3, "f1": 0.6}
    r = {"name": name, "method": name.split("-")[0], "ratio": 0.5, "scope": "uniform", "params": 1000,
         "gflops": gflops, "finetune_epochs": 2, "onnx_bytes": 2_000_000,
         "latency_ms": {"p50": 5.0, "p99": 7.0, "total_p50": 8.0},
         "before_finetune": {"val": {**scores, "ap50": 0.1}, "test": {**scores, "ap50": 0.05}}}
    if finetuned:
        r["after_finetune"] = {"val": {**scores, "ap50": val_ap50}, "test": scores}
    return r


def test_variants_parse_and_name():
    v = Variant.parse("taylor:0.5:global")
    assert (v.method, v.ratio, v.scope, v.name) == ("taylor", 0.5, "global", "taylor-global-0.5")
    assert Variant.parse("l1:0.3").scope == "uniform" and Variant.parse(str(v)) == v
    with pytest.raises(argparse.ArgumentTypeError, match="method:ratio"):
        Variant.parse("taylor")
    names = [x.name for x in default_variants()]
    assert len(names) == len(set(names)) == 15  # 4 criteria x 3 ratios uniform + Taylor global x 3


def test_default_is_chosen_on_validation_among_models_that_halve_the_flops():
    baseline = {"gflops": 1.0}
    results = [_result("taylor-a", 0.45, val_ap50=0.80, test_ap50=0.70),
               _result("random-b", 0.40, val_ap50=0.85, test_ap50=0.60),
               _result("l1-c", 0.60, val_ap50=0.95, test_ap50=0.99),      # too many FLOPs
               _result("bn-d", 0.30, val_ap50=0.99, finetuned=False)]      # not fine-tuned
    assert choose_default(baseline, results)["name"] == "random-b"   # val decides, not test
    extra = {**_result("shipped", 0.3, val_ap50=1.0), "extra": True}
    assert choose_default(baseline, [*results, extra])["name"] == "random-b"  # extras are never chosen
    assert choose_default(baseline, results[2:]) is None


def test_table_shows_before_and_after_and_speed_up():
    baseline = {**_result("baseline", 1.0, 0.9), "latency_ms": {"p50": 10.0, "p99": 12.0}}
    del baseline["before_finetune"]
    text = table(baseline, [_result("taylor-uniform-0.5", 0.25, 0.8)])
    rows = text.strip().splitlines()
    assert len(rows) == 4
    assert "| 0.250 (75%) |" in rows[3] and "| 2.00x |" in rows[3] and "0.050 → 0.500" in rows[3]
    assert "→" not in rows[2].split("|")[8]  # the baseline has one figure, not a before/after pair


@pytest.mark.slow
def test_study_runs_end_to_end_and_writes_its_report(tmp_path):
    data = write_kvasir_like(tmp_path / "kv", n=12)
    from models import save_checkpoint
    from training.trainer import TrainConfig, Trainer

    Trainer(TrainConfig(data=str(data), out=str(tmp_path / "base"), width=0.25, img=64, epochs=1, batch=4,
                        workers=0), show_progress=False).run()
    base = tmp_path / "base" / "last.safetensors"
    from models import load_checkpoint

    extra = save_checkpoint(tmp_path / "extra.safetensors", load_checkpoint(base).model, {"epoch": 1})
    main(["--weights", str(base), "--data", str(data), "--out", str(tmp_path / "study"), "--docs",
          str(tmp_path / "docs"), "--variants", "taylor:0.5", "random:0.5:global", "--finetune-epochs", "1",
          "--bench-iterations", "3", "--quiet", "--extra", f"copy={extra}"])
    study = json.loads((tmp_path / "study" / "study.json").read_text())
    names = [v["name"] for v in study["variants"]]
    assert names == ["taylor-uniform-0.5", "random-global-0.5", "copy"]
    for v in study["variants"][:2]:
        assert v["gflops"] < study["baseline"]["gflops"] and v["finetune_epochs"] == 1
        assert set(v["before_finetune"]["test"]) == {"ap50", "ap50_95", "f1"}
        assert v["latency_ms"]["p50"] > 0 and v["onnx_bytes"] > 0
    assert study["variants"][2]["gflops"] == study["baseline"]["gflops"]
    assert (tmp_path / "docs" / "pruning_tradeoff.png").stat().st_size > 10_000
    assert len((tmp_path / "docs" / "pruning_table.md").read_text().splitlines()) == 2 + 1 + 3
    # Resumable: a second run skips the finished variants (their outputs stay untouched).
    done = tmp_path / "study" / "taylor-uniform-0.5" / "prune_done.json"
    stamp = done.stat().st_mtime_ns
    main(["--weights", str(base), "--data", str(data), "--out", str(tmp_path / "study"), "--docs",
          str(tmp_path / "docs"), "--variants", "taylor:0.5", "--phase", "prune", "--quiet"])
    assert done.stat().st_mtime_ns == stamp
