"""Run the study's variants: resumable, several at once, and stopping itself before a deadline.

Each variant has its own folder under ``--out``:

- pruned variants: ``pruned.safetensors`` (scored, slimmed, BatchNorm recalibrated), then
  the fine-tune run in ``finetune/``;
- the from-scratch control: ``init.safetensors`` (random weights at the slim widths), then
  the training run in ``train/``;
- ``done.json`` once finished; with an archive named, the finished variant's compact record
  is then copied there (``prune_study.archive``), and the archive decides what is done.

A variant stopped anywhere picks up where it was: an existing ``pruned.safetensors`` is not
pruned again and a run folder with a saved state is resumed (``Trainer(resume=True)``).
With ``jobs > 1`` or a deadline every variant runs as its own process (its own session, so
that it and its data-loading workers can be stopped as one group at the deadline; never by
name matching). Several small fine-tunes share one GPU this way.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from models import YOLOv3, load_checkpoint, save_checkpoint
from models.checkpoint import network_digest
from training.data.augment.pipeline import AugmentConfig
from training.loop.recipe import CHECKPOINT_PATH_FIELDS, PLACE_FIELDS, refuse_other_recipe
from training.loop.train_state import STATE_FILE
from training.loop.trainer import TrainConfig, Trainer
from training.processes import run_queue, start_group
from training.prune_study.variants import SCRATCH, Variant
from training.pruning.graph import coupling_groups
from training.pruning.importance import L1Importance
from training.pruning.plan import PruneSpec, group_scores, plan_keep
from training.pruning.prune import PruneJob, finetune_config, run_prune
from training.pruning.slim import slim


@dataclass
class StudySettings:
    """What every variant of one study shares."""

    weights: Path                 # the unpruned baseline
    data: Path
    out: Path
    finetune_epochs: int = 30
    finetune_lr: float = 0.001
    scratch_epochs: int | None = None  # the control's budget; None: the baseline's epochs plus a fine-tune's
    scratch_recipe: Path | None = None  # a train_config.json to train the control by (default: the baseline's)
    distill: float = 0.0
    ema_decay: float | None = None  # the fine-tunes' weight average (None: the trainer's defaults)
    ema_tau: float | None = None
    threads: int = 0
    workers: int = 1
    device: str = "auto"
    show_progress: bool = False
    archive: Path | None = None   # where finished variants are kept, committed (prune_study.archive)
    carry: bool = False           # copy unfinished runs' progress into the archive when stopping (prune_study.carry)


@dataclass(frozen=True)
class VariantPaths:
    folder: Path

    @property
    def start(self) -> Path:
        """The checkpoint the run starts from (pruned, or random init for the control)."""
        return self.folder / ("init.safetensors" if self.folder.name.startswith(SCRATCH) else "pruned.safetensors")

    @property
    def run(self) -> Path:
        return self.folder / ("train" if self.folder.name.startswith(SCRATCH) else "finetune")

    @property
    def done(self) -> Path:
        return self.folder / "done.json"

    @property
    def log(self) -> Path:
        return self.folder / "log.txt"


def paths(settings: StudySettings, v: Variant) -> VariantPaths:
    """The variant's work folder."""
    return VariantPaths(settings.out / v.name)


def archived(settings: StudySettings, v: Variant) -> VariantPaths | None:
    """The variant's archived record (``prune_study.archive``), or ``None`` when it has none."""
    if settings.archive is None:
        return None
    p = VariantPaths(settings.archive / v.name)
    return p if p.done.is_file() else None


def where(settings: StudySettings, v: Variant) -> VariantPaths:
    """Where a variant's figures are read from: its archive when it has one (a variant archived
    is done, and every archived variant is scored from the same fp16 form), else the work folder."""
    return archived(settings, v) or paths(settings, v)


def finished(settings: StudySettings, v: Variant) -> bool:
    """Done: archived, or (with no archive named) marked done in the work folder."""
    if settings.archive is not None:
        return archived(settings, v) is not None
    return paths(settings, v).done.is_file()


def slim_widths(base: YOLOv3, ratio: float, divisor: int = 8) -> YOLOv3:
    """A network with the widths a uniform prune at ``ratio`` leaves (weights irrelevant:
    under ``uniform`` every criterion keeps the same number of channels per layer)."""
    keep = plan_keep(group_scores(L1Importance()(base), coupling_groups(base.config.spp)),
                     PruneSpec(ratio, "uniform", divisor=divisor))
    return slim(base, keep)


def baseline_recipe(weights: Path) -> TrainConfig:
    """How the baseline was trained: its run folder's ``train_config.json`` when it sits
    beside the weights, else the recipe in the checkpoint's metadata (older checkpoints kept
    no augmentation settings there: the recipe's negatives say which of the two it used)."""
    run_config = weights.parent / "train_config.json"
    if run_config.is_file():
        return TrainConfig.from_dict(json.loads(run_config.read_text()))
    recipe = load_checkpoint(weights).metadata.get("recipe")
    if not isinstance(recipe, dict):
        raise ValueError(f"{weights}: no train_config.json beside it and no recipe in its metadata: "
                         "the from-scratch control cannot copy the baseline's training")
    recipe = dict(recipe)
    if "augment" not in recipe:
        other = recipe.get("mine_negatives") or recipe.get("negative_fraction")
        recipe["augment"] = dataclasses.asdict(AugmentConfig.other_scopes() if other else AugmentConfig())
        print(f"{weights}: its metadata has no augmentation settings; the control uses "
              f"{'other-scopes' if other else 'kvasir'} augmentation, as its recipe's negatives imply")
    return TrainConfig.from_dict(recipe)


def scratch_config(settings: StudySettings, v: Variant, start: Path, run_dir: Path) -> TrainConfig:
    """The control: the baseline's recipe (or ``scratch_recipe``: a baseline trained in stages,
    such as a warm restart, has no single recipe of its own) from random weights at the slim
    widths, for the baseline's epochs plus a fine-tune's unless ``scratch_epochs`` says
    otherwise."""
    recipe = (TrainConfig.from_dict(json.loads(settings.scratch_recipe.read_text())) if settings.scratch_recipe
              else baseline_recipe(settings.weights))
    epochs = settings.scratch_epochs or recipe.epochs + settings.finetune_epochs
    return dataclasses.replace(recipe, data=str(settings.data), out=str(run_dir), init_weights=str(start),
                               epochs=epochs, seed=v.seed, threads=settings.threads, workers=settings.workers,
                               device=settings.device, fit_anchors=False, pretrained=None, distill_from=None)


def _train(cfg: TrainConfig, show_progress: bool) -> None:
    run = Path(cfg.out)
    resume = (run / STATE_FILE).is_file() or (run / "last.safetensors").is_file()
    if resume:
        # A study resumed with other flags (--finetune-lr, --distill, --ema-*) must not finish a
        # run under a recipe it did not start with: the cell would mix two recipes silently.
        refuse_other_recipe(run, cfg)
    Trainer(cfg, resume=resume, show_progress=show_progress).run()


def _job(settings: StudySettings, v: Variant, start: Path) -> PruneJob:
    return PruneJob(settings.weights, v.method if v.method != SCRATCH else "l1", v.ratio, start, settings.data,
                    scope=v.scope, finetune_lr=settings.finetune_lr, seed=v.seed, threads=settings.threads,
                    workers=settings.workers, device=settings.device, distill_weight=settings.distill,
                    ema_decay=settings.ema_decay, ema_tau=settings.ema_tau, show_progress=settings.show_progress,
                    resume=True)  # a child stopped while pruning picks up its saved steps


def _config(settings: StudySettings, v: Variant, start: Path, run_dir: Path) -> TrainConfig:
    """The variant's training recipe under today's flags, from the checkpoint ``start``."""
    if v.method == SCRATCH:
        return scratch_config(settings, v, start, run_dir)
    return finetune_config(_job(settings, v, start), start, settings.finetune_epochs, run_dir)


def refuse_archived_under_other_recipe(settings: StudySettings, v: Variant) -> None:
    """An archived run counts as done only for the recipe it was trained by: a study asked
    for with other flags (--finetune-epochs, --finetune-lr, --distill, --ema-*) must not take
    it as one of its own. Its final weights stand in for the start (same input size)."""
    record = archived(settings, v)
    if record is not None:
        refuse_other_recipe(record.run, _config(settings, v, record.run / "last.safetensors", record.run),
                            PLACE_FIELDS + CHECKPOINT_PATH_FIELDS)


def run_variant(settings: StudySettings, v: Variant) -> None:
    """Prune (or initialise) and train one variant, resuming whatever it had done."""
    from training.prune_study.archive import archive_variant  # it reads this module's paths
    from training.prune_study.carry import restore

    p = paths(settings, v)
    if archived(settings, v):
        refuse_archived_under_other_recipe(settings, v)
        return
    if p.done.is_file():
        if settings.archive is not None:
            archive_variant(settings, v)
        return
    # Progress carried from an earlier sitting, when the work folder has less.
    restore(settings, v, lambda start: _config(settings, v, start, p.run))
    p.folder.mkdir(parents=True, exist_ok=True)
    started = time.time()
    if v.method == SCRATCH:
        if not p.start.is_file():
            torch.manual_seed(v.seed)
            widths = slim_widths(load_checkpoint(settings.weights).model_at_trained_size(), v.ratio,
                                 _job(settings, v, p.start).divisor).config
            save_checkpoint(p.start, YOLOv3(widths), {"scratch_control": {"ratio": v.ratio, "seed": v.seed}})
    elif not p.start.is_file():
        run_prune(_job(settings, v, p.start))  # finetune_epochs 0: score, slim, recalibrate, write p.start
    cfg = _config(settings, v, p.start, p.run)
    if settings.threads:
        torch.set_num_threads(settings.threads)
    _train(cfg, settings.show_progress)
    p.done.write_text(json.dumps({"variant": v.name, "epochs": cfg.epochs,
                                  "minutes": round((time.time() - started) / 60, 2)}))
    if settings.archive is not None:
        archive_variant(settings, v)


def archive_finished(settings: StudySettings, variants: list[Variant]) -> list[str]:
    """Archive every variant finished in the work folder but not archived yet (the archive
    was named later, or a sitting ended between the two). One that cannot be archived is
    reported and left out, not allowed to stop the others; returns the names of those."""
    from training.prune_study.archive import archive_variant

    failed = []
    if settings.archive is None:
        return failed
    for v in variants:
        if paths(settings, v).done.is_file() and not archived(settings, v):
            try:
                archive_variant(settings, v)
            except (OSError, ValueError, RuntimeError) as err:
                print(f"could not archive {v.name}: {err}", flush=True)
                failed.append(v.name)
            else:
                print(f"archived {v.name} in {settings.archive}", flush=True)
    return failed


BASELINE_FILE = "baseline.json"


def check_baseline(out: Path, weights: Path) -> None:
    """Record the baseline a study prunes on its first call; refuse a later call with
    another network, which would mix networks pruned from two baselines in one table.

    The network is identified by its tensors and architecture (``models.checkpoint.network_digest``),
    not the file's bytes: re-shipping the same baseline (new metrics or settings in its header)
    must not stop a study half-way. A record from before the tensor digest (file SHA only)
    is upgraded when the file is still the one recorded."""
    if not weights.is_file():
        raise SystemExit(f"{weights}: no such baseline checkpoint")
    file_digest = hashlib.sha256(weights.read_bytes()).hexdigest()
    network = network_digest(weights)
    record = out / BASELINE_FILE
    if record.is_file():
        before = json.loads(record.read_text())
        if before.get("network_sha256") is None and before["sha256"] == file_digest:
            before["network_sha256"] = network
            record.write_text(json.dumps(before, indent=2))
        if before.get("network_sha256") != network:
            raise SystemExit(f"{weights}: this study ({out}) prunes another baseline ({before['weights']}); "
                             "use another --out for this one")
        return
    out.mkdir(parents=True, exist_ok=True)
    record.write_text(json.dumps({"weights": str(weights), "sha256": file_digest, "network_sha256": network},
                                 indent=2))


def run_all(settings: StudySettings, variants: list[Variant], jobs: int = 1,
            deadline: float | None = None) -> list[str]:
    """Run every unfinished variant, ``jobs`` at a time; at ``deadline`` (a ``time.time()``)
    stop the running ones (each resumes next time) and start no more. Returns the names of
    variants that failed (their log says why).

    Variants finished but not yet archived are archived first (``archive_finished``); an
    archived one whose recipe differs from today's flags stops the study. With
    ``settings.carry`` the unfinished ones' progress is copied into the archive at the end,
    however the runner ends (``prune_study.carry``)."""
    from training.prune_study.carry import drop

    failed = archive_finished(settings, variants)
    for v in variants:
        refuse_archived_under_other_recipe(settings, v)
        if archived(settings, v):
            drop(settings, v)  # progress carried before it was archived (a failed delete, a merge) is not needed
    pending = [v for v in variants if not finished(settings, v) and v.name not in failed]
    try:
        if jobs <= 1 and deadline is None:
            for v in pending:
                run_variant(settings, v)
            return failed
        return failed + run_queue(pending, lambda v: _start_child(settings, v), lambda v: finished(settings, v),
                                  name=lambda v: v.name, log=lambda v: paths(settings, v).log, jobs=jobs,
                                  deadline=deadline, say=lambda m: print(m, flush=True))
    finally:  # at the deadline, and when the runner itself is stopped (its children stopped first)
        if settings.carry:
            from training.prune_study.carry import carry_unfinished

            carry_unfinished(settings, pending)


def _start_child(settings: StudySettings, v: Variant) -> subprocess.Popen:
    p = paths(settings, v)
    p.folder.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "training.prune_study", "--phase", "run", "--jobs", "1",
           "--weights", str(settings.weights), "--data", str(settings.data), "--out", str(settings.out),
           "--finetune-epochs", str(settings.finetune_epochs), "--finetune-lr", str(settings.finetune_lr),
           *(["--scratch-epochs", str(settings.scratch_epochs)] if settings.scratch_epochs else []),
           *(["--scratch-recipe", str(settings.scratch_recipe)] if settings.scratch_recipe else []),
           "--distill", str(settings.distill),
           *(["--ema-decay", str(settings.ema_decay)] if settings.ema_decay is not None else []),
           *(["--ema-tau", str(settings.ema_tau)] if settings.ema_tau is not None else []),
           "--threads", str(settings.threads), "--workers", str(settings.workers), "--device", settings.device,
           *(["--archive", str(settings.archive)] if settings.archive is not None else []),
           "--variants", str(v), "--seeds", str(v.seed), "--quiet"]
    print(f"started {v.name} (log: {p.log})", flush=True)
    return start_group(cmd, p.log)
