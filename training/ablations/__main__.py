"""``python -m training.ablations``: the per-change table of issue 11 on the CPU, across sittings.

    python -m training.ablations run --data ../shared/data/kvasir-seg --out runs/ablations \\
        --epochs 60 --jobs 2 --threads 1 --stop-after-minutes 150       # again each sitting
    python -m training.ablations report --out runs/ablations --docs docs/accuracy

``run`` trains the recipe and one run per change taken away from it (``plan.ablations``),
``--jobs`` at a time, each resuming where it stopped; at ``--stop-after-minutes`` every run
is stopped at once and the next call goes on. ``report`` writes the table (markdown and
JSON) and every run's val curve, finished or not. (A GPU lease trains the same runs, with
its epochs fitted to its time: ``python -m training.gpu_lease``.)
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.ablations", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="{run,report}")
    r = sub.add_parser("run", help="train (or resume) the runs of the table until done or out of time")
    r.add_argument("--data", required=True, help="dataset with train/val splits (Kvasir-SEG)")
    r.add_argument("--out", default="runs/ablations", help="campaign folder, one sub-folder per run")
    r.add_argument("--epochs", type=int, required=True, help="epochs of every run (all share them)")
    r.add_argument("--zoom", default="runs/zoomout-val",
                   help="the zoom-out set each finished run is scored on (made from --data's val if missing)")
    r.add_argument("--only", nargs="+", metavar="RUN", help="these runs only (default: all, the reference first)")
    r.add_argument("--jobs", type=int, default=2, help="runs at once (default 2: one per core)")
    r.add_argument("--threads", type=int, default=1, help="torch threads per run (default 1)")
    r.add_argument("--workers", type=int, default=1, help="data-loading processes per run (default 1)")
    r.add_argument("--device", default="cpu")
    r.add_argument("--stop-after-minutes", type=float, help="stop every run then (they resume on the next call)")
    p = sub.add_parser("report", help="the table and the curves of what has run so far")
    p.add_argument("--out", default="runs/ablations", help="campaign folder")
    p.add_argument("--docs", default="docs/accuracy", help="where ablations.md/.json/.png go")
    j = sub.add_parser("job")  # one run's child process (no help: not listed)
    j.add_argument("--job", required=True)
    args = parser.parse_args(argv)

    if args.command == "job":
        from training.ablations.job import run_job

        return run_job(Path(args.job))
    from training.ablations.plan import ablations

    runs = ablations()
    if args.command == "report":
        return _report(Path(args.out), runs, Path(args.docs))
    names = {r.name for r in runs}
    unknown = sorted(set(args.only or []) - names)
    if unknown:
        parser.error(f"--only {' '.join(unknown)}: no such run (runs: {', '.join(r.name for r in runs)})")
    if not Path(args.data).is_dir():
        print(f"error: {args.data}: no dataset there", file=sys.stderr)
        return 2
    from training.ablations.campaign import CampaignSettings, run_campaign
    from training.processes import exit_on_sigterm

    exit_on_sigterm()  # a kill of this process stops its runs too
    from training.evaluation.zoom_out_set import ensure_zoom_out_set

    zoom = ensure_zoom_out_set(Path(args.data), Path(args.zoom))
    settings = CampaignSettings(Path(args.data), Path(args.out), zoom, args.epochs, args.threads, args.workers,
                                args.device)
    chosen = [r for r in runs if not args.only or r.name in args.only]
    deadline = time.time() + 60 * args.stop_after_minutes if args.stop_after_minutes else None
    result = run_campaign(settings, chosen, args.jobs, deadline,
                          say=lambda m: print(f"[{time.strftime('%H:%M:%S')}] {m}", flush=True))
    print("; ".join(f"{k}: {v}" for k, v in result.items()))
    return 1 if "failed" in result.values() else 0


def _report(out: Path, runs, docs: Path) -> int:
    import json

    from training.ablations.campaign import SETTINGS_FILE
    from training.ablations.report import format_markdown, save_curves, table
    from training.evaluation.evaluate import write_json

    settings = out / SETTINGS_FILE
    if not settings.is_file():
        print(f"error: {settings}: no campaign there (start one with 'python -m training.ablations run')",
              file=sys.stderr)
        return 2
    result = table(out, runs, json.loads(settings.read_text())["epochs"])
    text = format_markdown(result)
    print(text)
    docs.mkdir(parents=True, exist_ok=True)
    (docs / "ablations.md").write_text(text + "\n")
    write_json(docs / "ablations.json", result)
    save_curves(out, runs, docs / "ablations.png")
    print(f"written: {docs / 'ablations.md'}, {docs / 'ablations.json'}, {docs / 'ablations.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
