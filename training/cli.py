"""Command-line handlers for the training-side subcommands (data, anchors, train, val).

Imported lazily by ``app.cli`` only when one of these subcommands runs, so the runtime
(``detect``, ``app``, ``bench``) never imports torch.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import signal
import sys
import time
from pathlib import Path

from training.data.augment.pipeline import AugmentConfig
from training.data.data_check import open_checked, print_problems, require_samples
from training.loop.trainer import TrainConfig, Trainer
from training.processes import exit_on_sigterm, terminating_signal
from training.pruning.prune import PruneJob

STOPPED_EARLY = 3  # exit status of a run stopped at --stop-after-minutes (so a chain of steps stops too)
CARRY_FAILED = 4  # exit status when --carry could not write its record (the message says why)


def run_data_check(args: argparse.Namespace) -> int:
    from training.data.data_check import check_dataset, format_report

    report = check_dataset(args.dir, show_progress=not args.quiet)
    print(format_report(report))
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(report, indent=2))
    return 1 if (report["skipped"] or report["empty"]) and args.strict else 0


def run_zoom_out(args: argparse.Namespace) -> int:
    from training.evaluation.zoom_out_set import write_zoom_out_set

    index = open_checked(args.data, args.split, show_progress=not args.quiet)
    require_samples(index, args.split)
    print_problems(index, f"split {args.split!r}")
    manifest = write_zoom_out_set(index.samples, args.out, seed=args.seed, show_progress=not args.quiet,
                                  source={"data": str(Path(args.data).resolve()), "split": args.split})
    print(f"wrote {len(manifest['images'])} zoom-out frames of split {args.split!r} to {args.out} "
          f"(scale {manifest['scale_range'][0]}-{manifest['scale_range'][1]}, seed {args.seed}); "
          f"score it with: polypscope val --weights W --data {args.out}")
    return 0


def run_anchors(args: argparse.Namespace) -> int:
    import numpy as np

    from training.data.anchors import MATCH_RATIO, box_sizes_at, kmeans_anchors, matched_share

    index = open_checked(args.data, args.split)  # the boxes training will see, nothing it would skip
    require_samples(index, args.split)
    print_problems(index, f"split {args.split!r}")
    fit = kmeans_anchors(box_sizes_at(index.samples, args.img), k=9, seed=args.seed)
    print(f"{len(index.samples)} images of split {args.split!r} at {args.img} px")
    print("anchors (w, h) in input pixels, smallest first:")
    for w, h in fit.anchors:
        print(f"  {w:7.1f} {h:7.1f}")
    print(f"mean best IoU {fit.mean_best_iou:.3f}; best possible recall {fit.best_possible_recall:.4f}")
    print("as JSON:", json.dumps([[round(float(w), 2), round(float(h), 2)] for w, h in fit.anchors]))
    wh = box_sizes_at(index.samples, args.img)
    anchors = fit.anchors
    if args.weights:
        from models import load_checkpoint

        anchors = np.array(load_checkpoint(args.weights).config.anchors)
        print(f"coverage below is of {args.weights}'s anchors")
    shares = ", ".join(f"{scale:g}x {matched_share(wh, anchors, scale):.1%}" for scale in (1, 0.5, 0.25, 0.125))
    print(f"boxes with an anchor within {MATCH_RATIO:g}x of both sides (what the loss can learn), the boxes "
          f"shrunk by: {shares}")
    return 0


def run_train(args: argparse.Namespace) -> int:
    overrides = {k: v for k, v in vars(args).items()
                 if k in {f.name for f in dataclasses.fields(TrainConfig)} and v is not None}
    out = Path(overrides.get("out", TrainConfig.out))
    carry_dir = Path(args.carry) if getattr(args, "carry", None) else None
    if carry_dir is not None:
        from training.loop.carry import restore_before_run

        restore_before_run(carry_dir, out, resume=args.resume, epochs_asked=args.epochs)
    if args.resume:
        saved = out / "train_config.json"
        if not saved.is_file():
            print(f"error: {saved}: nothing to resume", file=sys.stderr)
            return 2
        cfg = TrainConfig.from_dict(json.loads(saved.read_text()))
        cfg.out = str(out)  # the folder named now, even if the run was moved since it started
        if args.epochs is not None:
            cfg.epochs = args.epochs
        ignored = [k for k in overrides if k not in ("out", "epochs") and not (k == "augment"
                                                                            and overrides[k] == "other-scopes")]
        ignored += ["no_mosaic"] if args.no_mosaic else []
        ignored += [k for k in ("copy_paste", "distractors") if getattr(args, k, None) is not None]
        if ignored:
            names = ", ".join("--" + k.replace("_", "-") for k in ignored)
            print(f"warning: --resume continues with the settings saved in {saved}; ignored: {names}",
                  file=sys.stderr)
    else:
        augment = AugmentConfig() if getattr(args, "augment", "other-scopes") == "kvasir" else AugmentConfig.other_scopes()
        if args.no_mosaic:
            augment = dataclasses.replace(augment, mosaic=0.0)
        for k in ("copy_paste", "distractors"):  # augmentation settings, not TrainConfig fields
            if getattr(args, k, None) is not None:
                augment = dataclasses.replace(augment, **{k: getattr(args, k)})
        overrides["augment"] = augment
        cfg = TrainConfig(**overrides)
    minutes = getattr(args, "stop_after_minutes", None)
    trainer = Trainer(cfg, resume=args.resume, show_progress=not args.quiet,
                      deadline=None if minutes is None else time.monotonic() + 60 * minutes)
    previous_handler = exit_on_sigterm() if carry_dir is not None else None  # a kill still carries
    carried = True
    interrupted: BaseException | None = None
    try:
        metrics = trainer.run()
    except BaseException as exc:  # noqa: BLE001 - re-raised below unless a SIGTERM caused it
        if previous_handler is None or terminating_signal() is None:
            raise
        interrupted = exc  # the SIGTERM, whatever exception it surfaced as
    finally:
        if carry_dir is not None:
            from training.loop.carry import carry_after_run

            try:
                carried = carry_after_run(out, carry_dir, cfg.epochs)
            finally:
                if previous_handler is not None:
                    signal.signal(signal.SIGTERM, previous_handler)
    if previous_handler is not None and terminating_signal() is not None:  # wherever it landed
        raise SystemExit(128 + terminating_signal()) from interrupted
    if not carried:
        return CARRY_FAILED
    if metrics:
        print(json.dumps({k: v for k, v in metrics.items() if not isinstance(v, list)}, indent=2))
    print(f"checkpoints in {cfg.out}: best.safetensors (by val AP50), last.safetensors")
    if trainer.stopped_early:
        carry_flag = f" --carry {carry_dir}" if carry_dir is not None else ""
        print(f"not finished: go on with 'polypscope train --out {out} --resume{carry_flag}'")
        return STOPPED_EARLY
    return 0


def run_val(args: argparse.Namespace) -> int:
    from training.evaluation.validate import validate

    return validate(args)


def prune_job_from_args(args: argparse.Namespace) -> PruneJob:
    """The ``prune`` command's flags as a job (flags left unset mean the job's defaults)."""
    from training.data.datasets import default_data_root

    data = Path(args.data) if args.data else default_data_root()
    return PruneJob(weights=Path(args.weights), method=args.method, ratio=args.ratio, out=Path(args.out),
                    data=data, scope=args.scope, steps=args.steps, finetune_epochs=args.finetune_epochs,
                    finetune_lr=args.finetune_lr, taylor_batches=args.taylor_batches,
                    recalibration_batches=args.recalibration_batches, seed=args.seed, threads=args.threads or 0,
                    workers=args.workers, device=args.device, distill_weight=args.distill,
                    ema_decay=args.ema_decay, ema_tau=args.ema_tau, keep=args.keep, fold=args.fold,
                    show_progress=not args.quiet, resume=args.resume, copy_paste=args.copy_paste or 0.0,
                    distractors=args.distractors or 0.0, multi_scale=args.multi_scale or 0.0,
                    deadline=None if args.stop_after_minutes is None
                    else time.monotonic() + 60 * args.stop_after_minutes)


def run_prune(args: argparse.Namespace) -> int:
    from training.pruning.prune import StoppedAtDeadline, run_prune

    if not args.finetune_epochs and (args.ema_decay is not None or args.ema_tau is not None or args.keep != "best"):
        print("warning: --ema-decay, --ema-tau and --keep act while fine-tuning; with --finetune-epochs 0 "
              "they are ignored", file=sys.stderr)
    job = prune_job_from_args(args)
    try:
        meta = run_prune(job)
    except StoppedAtDeadline as stop:
        print(f"{stop}; the prune is not finished: go on with the same prune command and --resume "
              f"(the fine-tune's own folder is not a prune's --out)", file=sys.stderr)
        return STOPPED_EARLY
    b, a = meta["before"], meta["after"]
    print(f"{args.method} pruning, ratio {args.ratio} ({args.scope}, {args.steps} step(s)): "
          f"parameters {b['params']:,} -> {a['params']:,}, GFLOPs {b['gflops']:.3f} -> {a['gflops']:.3f} "
          f"({100 * (1 - a['gflops'] / b['gflops']):.1f}% fewer)")
    print(f"wrote {args.out}")
    return 0
