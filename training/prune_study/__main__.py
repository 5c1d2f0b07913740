"""``python -m training.prune_study``: run the study's grid, then report it (docs/pruning.md).

Phases: ``run`` trains every variant (resumable; ``--jobs N`` at once; ``--stop-after-minutes``
stops in time), ``report`` scores every variant that has trained (val; test only with
``--score-test``) and writes the tables, curves and trade-off plot, ``all`` does both,
``carry`` copies unfinished runs' progress into the archive (``--carry`` does it whenever
``run`` stops), so that a new checkout resumes them, and ``redraw`` draws the table and plots
again from the committed record, scoring nothing (for latency measured after test was
scored). Latency comes from ``python -m engine.benchmarks.study_latency --study OUT`` when it
has been run.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from models import load_checkpoint
from training.data.datasets import default_data_root
from training.processes import exit_on_sigterm
from training.prune_study.report import (
    MIN_FLOPS_CUT,
    cells_table,
    choose_default,
    compare,
    comparisons_table,
    plot_curves,
    plot_tradeoff,
    progress_note,
    pruned_among,
    summarise_cells,
)
from training.prune_study.runner import StudySettings, archive_finished, check_baseline, finished, run_all, where
from training.prune_study.scoring import evaluate, in_progress, score_variant
from training.prune_study.variants import GRIDS, SCRATCH, SEEDS, Variant, expand
from training.pruning.prune import summary

TEST_MARK = "test_scored.json"


def _study_folders(settings: StudySettings) -> list[Path]:
    """Where the study's own records live: the work folder, and the archive, which outlives it."""
    return [settings.out] + ([settings.archive] if settings.archive is not None else [])


def report(settings: StudySettings, variants: list[Variant], docs: Path, score_test: bool) -> dict[str, Any]:
    """Score every FINISHED run (val; test only with ``score_test``, once, and only when every
    run has finished), tabulate, plot, and apply the rule for the default when the study is
    complete. Runs still training are listed, never scored: a cell mean over a run at epoch
    20 and one at epoch 60 answers no question."""
    not_archived = archive_finished(settings, variants)  # every finished run is then scored in one (fp16) form
    if not_archived:
        raise SystemExit(f"{settings.archive}: could not archive {', '.join(not_archived)} (see above); the "
                         "report scores every finished run from the archive, in one precision")
    done = [v for v in variants if finished(settings, v)]
    unfinished = [v for v in variants if not finished(settings, v)]
    if score_test:
        if unfinished:
            raise SystemExit(f"{settings.out}: {len(unfinished)} of {len(variants)} runs have not finished "
                             f"({', '.join(v.name for v in unfinished)}); test is scored once, for the final "
                             "table, when every run has finished")
        for folder in _study_folders(settings):
            if (folder / TEST_MARK).is_file():
                raise SystemExit(f"{folder / TEST_MARK}: test was already scored for this study "
                                 f"({(folder / TEST_MARK).read_text().strip()}); it is scored once, for the final "
                                 "table. Report without --score-test, or delete the mark knowingly.")
    splits = ("val", "test") if score_test else ("val",)
    scored = [(v, score_variant(settings, v, splits)) for v in done]
    unscorable = [where(settings, v).run / "last.safetensors" for v, r in scored if r is None]
    if unscorable:  # a finished run left out of its cell would change the cell's mean silently
        raise SystemExit(f"{', '.join(map(str, unscorable))}: missing, though the run is marked finished; restore "
                         "the weights, or delete its done.json to train it again")
    results = [r for _, r in scored]
    if not results:
        hint = ("" if settings.archive is not None else
                "; if its runs were archived, name the archive with --archive (e.g. assets/pruning-study/study60)")
        raise SystemExit(f"{settings.out}: no run has finished yet; run --phase run first{hint}")
    waiting = [w for w in (in_progress(settings, v) for v in unfinished) if w is not None]
    not_started = sorted({v.name for v in unfinished} - {w["name"] for w in waiting})
    baseline = {**summary(load_checkpoint(settings.weights).model_at_trained_size()),
                **{s: evaluate(settings.weights, settings.data, s) for s in splits}}
    cells = summarise_cells(results)
    comparisons = [c for split in splits for key in ("ap50", "ap50_95") for c in compare(results, split, key)]
    chosen = choose_default(baseline["gflops"], cells, [v.name for v in unfinished])
    latency_file = settings.out / "latency.json"
    latency = json.loads(latency_file.read_text()) if latency_file.is_file() else None
    study = {"baseline_weights": str(settings.weights), "baseline": baseline, "variants": results, "cells": cells,
             "comparisons": comparisons, "in_progress": waiting, "not_started": not_started, "latency": latency,
             "complete": not unfinished, "default": chosen["cell"] if chosen else None, "test_scored": score_test,
             "selection": f"highest mean val AP50 over seeds among pruned cells with >= {MIN_FLOPS_CUT:.0%} fewer "
                          "FLOPs, once every pruned run has finished"}
    docs.mkdir(parents=True, exist_ok=True)
    for folder in (settings.out, docs):  # docs/ is committed: the record outlives the work folder
        (folder / "study.json").write_text(json.dumps(study, indent=2))
    if score_test:
        for folder in _study_folders(settings):
            (folder / TEST_MARK).write_text(json.dumps({"scored_at": time.strftime("%Y-%m-%d %H:%M:%S"),
                                                        "variants": len(results)}))
    render(study, docs, len(variants))
    pruned_unfinished = pruned_among(v.name for v in unfinished)
    chosen_text = f"none yet ({len(pruned_unfinished)} pruned runs unfinished)" if pruned_unfinished else study["default"]
    print(f"default by the rule ({study['selection']}): {chosen_text}")
    return study


def render(study: dict[str, Any], docs: Path, planned: int) -> None:
    """The table (``pruning_table.md``) and the two plots of a study record, into ``docs``."""
    text = (progress_note(planned, study["in_progress"], study["not_started"])
            + cells_table(study["baseline"], study["cells"], study["latency"])
            + "\nDifferences, paired by seed (same data order) where both cells have two or more seeds in common, "
              "else unpaired:\n\n" + comparisons_table(study["comparisons"]))
    (docs / "pruning_table.md").write_text(text)
    plot_curves(docs / "pruning_curves.png", study["variants"])
    plot_tradeoff(docs / "pruning_tradeoff.png", study["baseline"], study["cells"])
    print(text)


def redraw(settings: StudySettings, docs: Path) -> dict[str, Any]:
    """The table and plots again from the committed record (``docs/study.json``), with the
    latency measured since (``--out/latency.json``, by ``engine.benchmarks.study_latency``).
    Scores nothing: once test has been scored for the final table, a report would have to
    score it again or print the table without it, and the figures already recorded are the
    ones the docs quote."""
    record = docs / "study.json"
    if not record.is_file():
        raise SystemExit(f"{record}: no study record to redraw; run --phase report first")
    study = json.loads(record.read_text())
    latency_file = settings.out / "latency.json"
    if not latency_file.is_file():
        raise SystemExit(f"{latency_file}: no latency measured; run python -m engine.benchmarks.study_latency "
                         f"--study {settings.out} first (on an idle machine)")
    study["latency"] = json.loads(latency_file.read_text())
    planned = len(study["variants"]) + len(study["in_progress"]) + len(study["not_started"])
    render(study, docs, planned)  # first: a drawing that fails leaves the record as it was
    for folder in (settings.out, docs):
        (folder / "study.json").write_text(json.dumps(study, indent=2))
    return study


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.prune_study", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", required=True, help="the trained (unpruned) baseline checkpoint")
    parser.add_argument("--data", help="dataset folder with train/val(/test) splits (default: Kvasir-SEG if found)")
    parser.add_argument("--out", default="runs/study", help="work folder, one sub-folder per variant and seed")
    parser.add_argument("--phase", choices=["run", "report", "all", "carry", "redraw"], default="all",
                        help="run, report, all (both; the default), carry: copy the unfinished runs' progress "
                             "into --archive now (see --carry), or redraw: the table and plots again from the "
                             "record in --docs with the latency measured since, scoring nothing")
    parser.add_argument("--grid", choices=sorted(GRIDS), default="reduced",
                        help="reduced (default: taylor, taylor-gate, random and scratch at 0.5) or full "
                             "(5 criteria x 3 ratios + scratch at each)")
    parser.add_argument("--variants", nargs="+", help="method:ratio[:scope] items instead of a grid")
    parser.add_argument("--seeds", nargs="+", type=int, default=list(SEEDS), help="seeds per cell (default 0 1 2)")
    parser.add_argument("--scratch-seeds", nargs="+", type=int,
                        help="seeds of the from-scratch control when it has fewer than the cells (this CPU runs one; "
                             "default: --seeds)")
    parser.add_argument("--finetune-epochs", type=int, default=30, help="fine-tuning epochs per pruned variant")
    parser.add_argument("--finetune-lr", type=float, default=0.001)
    parser.add_argument("--scratch-epochs", type=int,
                        help="epochs of the from-scratch control (default: the baseline's epochs plus --finetune-epochs, "
                             "the same budget)")
    parser.add_argument("--scratch-recipe", type=Path,
                        help="train_config.json the control trains by (default: the baseline's own; give the first "
                             "stage's when the baseline was trained in stages, with --scratch-epochs the total)")
    parser.add_argument("--distill", type=float, default=0.0, help="distillation weight while fine-tuning (0: off)")
    parser.add_argument("--ema-decay", type=float, help="the fine-tunes' weight-average decay cap "
                                                        "(default: the trainer's 0.9999)")
    parser.add_argument("--ema-tau", type=float, help="its ramp time constant in optimiser steps (default 2000)")
    parser.add_argument("--jobs", type=int, default=1, help="variants trained at once (separate processes)")
    parser.add_argument("--stop-after-minutes", type=float, help="stop every run at this time (they resume later)")
    parser.add_argument("--workers", type=int, default=1, help="data-loading processes per run")
    parser.add_argument("--threads", type=int, default=0, help="torch threads per run (0: torch's choice)")
    parser.add_argument("--device", default="auto", help="cpu, cuda, ... (default auto)")
    parser.add_argument("--score-test", action="store_true",
                        help="also score test: only once, for the final table, after every choice is made")
    parser.add_argument("--archive", type=Path,
                        help="folder, committed, that keeps each finished variant's final weights (fp16), curve "
                             "and recipe, so that the study survives the loss of --out; archived variants are "
                             "done and are scored from there (e.g. assets/pruning-study/study60)")
    parser.add_argument("--carry", action="store_true",
                        help="when the runner stops (deadline, failure, kill), copy each unfinished run's progress "
                             "(full-precision training state, curve, recipe; about 18 MB for the control) into "
                             "--archive/in-progress, to commit: a later sitting on a new checkout resumes from it")
    parser.add_argument("--docs", default="docs/pruning-study", help="where the table and the plots go "
                                                                     "(default docs/pruning-study)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    if args.scratch_recipe is not None and not args.scratch_recipe.is_file():
        raise SystemExit(f"{args.scratch_recipe}: no such train_config.json for the from-scratch control "
                         "(make train-baseline writes runs/baseline/train_config.json; the shipped baseline's "
                         "first cycle is docs/pruning/baseline-first-cycle.train_config.json)")
    if (args.carry or args.phase == "carry") and args.archive is None:
        raise SystemExit("--carry and --phase carry keep progress in the archive: name it with --archive")
    deadline = time.time() + 60 * args.stop_after_minutes if args.stop_after_minutes else None
    data = Path(args.data) if args.data else default_data_root()
    settings = StudySettings(Path(args.weights), data, Path(args.out), args.finetune_epochs, args.finetune_lr,
                             args.scratch_epochs, args.scratch_recipe, args.distill, args.ema_decay, args.ema_tau,
                             args.threads, args.workers, args.device, show_progress=not args.quiet,
                             archive=args.archive, carry=args.carry)
    cells = [Variant.parse(t) for t in args.variants] if args.variants else GRIDS[args.grid]
    scratch_seeds = args.scratch_seeds if args.scratch_seeds is not None else args.seeds
    variants = [v for v in expand(cells, list(dict.fromkeys([*args.seeds, *scratch_seeds])))  # seed-major, in order
                if v.seed in (scratch_seeds if v.method == SCRATCH else args.seeds)]
    settings.out.mkdir(parents=True, exist_ok=True)
    for folder in _study_folders(settings):  # the archive keeps the record when the work folder is lost
        check_baseline(folder, settings.weights)
    if args.phase == "redraw":
        redraw(settings, Path(args.docs))
        return 0
    if args.phase == "carry":
        from training.prune_study.carry import carry_unfinished

        carried = carry_unfinished(settings, variants)
        print(f"carried {len(carried)} run(s)" + ("" if carried else ": none had trained past its record"))
        return 0
    if args.phase in ("run", "all"):
        if args.jobs > 1 or deadline is not None or args.carry:  # a kill stops the children, and carries
            exit_on_sigterm()
        failed = run_all(settings, variants, args.jobs, deadline)
        if failed:
            print(f"variants failed: {', '.join(failed)} (see their log.txt)")
            return 1
    if args.phase in ("report", "all"):
        report(settings, variants, Path(args.docs), args.score_test)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
