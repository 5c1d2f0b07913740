"""Paired run comparison: final-epoch figures, the curve's noise and B - A, from results.csv."""

import csv
import json
import statistics

import pytest

from training.compare_runs import main, summarise


def _run(folder, ap50s, ap50_95s):
    folder.mkdir(parents=True)
    with (folder / "results.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["epoch", "loss_total", "val_ap50", "val_ap50_95"])
        for i, (a, b) in enumerate(zip(ap50s, ap50_95s), start=1):
            w.writerow([i, 0.1, a, b])
    return folder


def test_summary_is_the_last_epoch_and_the_spread_of_the_tail(tmp_path):
    ap50 = [0.5, 0.9, 0.6, 0.8, 0.7]  # the best epoch (0.9) is not what is reported
    run = _run(tmp_path / "a", ap50, [0.3, 0.4, 0.35, 0.45, 0.5])
    s = summarise(run, tail=3)
    assert (s.epochs, s.final_ap50, s.final_ap50_95) == (5, 0.7, 0.5)
    assert s.tail_sd_ap50 == pytest.approx(statistics.stdev([0.6, 0.8, 0.7]))


def test_pairs_give_differences_a_table_a_plot_and_json(tmp_path, capsys):
    a = _run(tmp_path / "a", [0.80, 0.90, 0.82], [0.50, 0.55, 0.52])
    b = _run(tmp_path / "b", [0.84, 0.85, 0.86], [0.54, 0.55, 0.56])
    plot, out = tmp_path / "c.png", tmp_path / "c.json"
    assert main(["--pair", str(a), str(b), "--label-a", "old", "--label-b", "new", "--tail", "3",
                 "--plot", str(plot), "--json-out", str(out)]) == 0
    data = json.loads(out.read_text())
    pair = data["pairs"][0]
    assert pair["diff_ap50"] == pytest.approx(0.04) and pair["diff_ap50_95"] == pytest.approx(0.04)
    assert pair["diff_tail_sd_ap50"] < 0  # the new curve is smoother
    assert "| 0 | 0.8200 / 0.5200" in capsys.readouterr().out
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_folder_that_is_not_a_run_is_a_one_line_error(tmp_path, capsys):
    a = _run(tmp_path / "a", [0.8], [0.5])
    assert main(["--pair", str(a), str(tmp_path / "nothing")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "nothing/results.csv: no results.csv" in err and "\n" not in err


def test_a_tail_too_short_for_a_spread_is_refused(tmp_path, capsys):
    a = _run(tmp_path / "a", [0.8, 0.9], [0.5, 0.6])
    with pytest.raises(SystemExit):
        main(["--pair", str(a), str(a), "--tail", "1"])
    assert "--tail 1: the spread needs at least 2 epochs" in capsys.readouterr().err
