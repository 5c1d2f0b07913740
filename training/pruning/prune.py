"""``polypscope prune``: score channels, slim the network physically, fine-tune it.

One-shot (``steps=1``) or iterative (prune a little, fine-tune, repeat). After every
slimming the BatchNorm statistics are re-estimated on training images (see
:mod:`training.pruning.bn_recalibration`); the work folder beside ``out`` keeps each step's
pruned-but-not-fine-tuned network (``step{k}_pruned.safetensors``) and the channels it kept
(``step{k}_keep.json``, indices into the previous step's channels per group). The result is an
ordinary checkpoint whose config records every new width, so the engine, the exporter
and the app use it like any other.

A prune with a long fine-tune outlives a sitting, so it resumes (``resume=True``,
``polypscope prune --resume``): the work folder records the job (``prune_job.json``), a step
whose pruned network was saved is not scored again, and its fine-tune continues from the
epoch it last saved. A resume asked with other settings is refused, and so is a fresh
start over an earlier prune's files, which would mix two prunes' steps.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from models import YOLOv3, load_checkpoint, save_checkpoint
from models.checkpoint import atomic_write_bytes, network_digest, remove_stale_temporaries
from models.complexity import count_flops, count_parameters
from training.data.augment.pipeline import AugmentConfig
from training.data.data_check import open_checked, print_problems, require_samples
from training.data.loader import ImageCache, TrainDataset, collate
from training.loop.loss import YoloLoss
from training.loop.recipe import CHECKPOINT_PATH_FIELDS, PLACE_FIELDS, refuse_other_recipe
from training.loop.train_state import STATE_FILE
from training.loop.trainer import TrainConfig, Trainer, checkpoint_epoch, pick_device
from training.progress import progress
from training.pruning.bn_recalibration import recalibrate_batchnorm
from training.pruning.graph import coupling_groups
from training.pruning.importance import (
    CRITERIA,
    BNScaleImportance,
    Importance,
    L1Importance,
    RandomImportance,
    TaylorGateImportance,
    TaylorImportance,
)
from training.pruning.plan import PruneSpec, group_scores, plan_keep
from training.pruning.slim import slim


@dataclass
class PruneJob:
    weights: Path
    method: str
    ratio: float
    out: Path
    data: Path | None = None
    scope: str = "global"
    steps: int = 1
    finetune_epochs: int = 0
    finetune_lr: float = 0.001
    taylor_batches: int = 32
    recalibration_batches: int = 32
    batch: int = 16
    seed: int = 0
    threads: int = 0
    workers: int = 1
    device: str = "auto"
    distill_weight: float = 0.0   # > 0: the unpruned network teaches while fine-tuning
    ema_decay: float | None = None  # the fine-tune's weight average (None: TrainConfig's defaults)
    ema_tau: float | None = None
    keep: str = "best"            # which epoch of each fine-tune carries on: "best" on val, or "last"
    # The recipe's changes measured one by one (docs/accuracy.md), off unless asked
    # (``make default-model`` asks for the adopted ones, whether or not the baseline had them).
    copy_paste: float = 0.0
    distractors: float = 0.0
    multi_scale: float = 0.0
    divisor: int = 8
    fold: str = "auto"            # where removed channels' constants are folded: see effective_fold
    show_progress: bool = True
    resume: bool = False          # continue the prune whose work files sit beside ``out``
    deadline: float | None = None  # a ``time.monotonic()``: fine-tune epochs that would end later wait for a resume


JOB_FILE = "prune_job.json"
# Job settings that may differ between the sittings that resume one prune (where it runs, not what).
JOB_PLACE_FIELDS = ("weights", "out", "data", "threads", "workers", "device", "show_progress", "resume",
                    "deadline")


class StoppedAtDeadline(Exception):
    """A prune stopped at ``PruneJob.deadline`` (``--stop-after-minutes``): every finished
    step and fine-tune epoch is saved in the work folder, and ``--resume`` goes on from them.
    An exception, not a return value, so that nothing after it writes ``out`` as if done."""


def training_batches(data: Path, size: int, batch: int, seed: int) -> DataLoader:
    """Augmented training batches (no mosaic): Taylor scoring and BatchNorm recalibration."""
    index = open_checked(data, "train")
    print_problems(index, "train")
    require_samples(index, "train")
    dataset = TrainDataset(ImageCache(index.samples, size), size, dataclasses.replace(AugmentConfig(), mosaic=0.0), seed)
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(dataset, batch_size=batch, shuffle=True, collate_fn=collate, generator=generator)


def make_criterion(job: PruneJob, model: YOLOv3, loader: DataLoader | None = None) -> Importance:
    if job.method == "random":
        return RandomImportance(job.seed)
    if job.method == "l1":
        return L1Importance()
    if job.method == "bn":
        return BNScaleImportance()
    if job.method in ("taylor", "taylor-gate"):
        if job.data is None:
            raise ValueError(f"{job.method} importance needs --data (it measures gradients on training images)")
        loader = loader or training_batches(job.data, model.config.input_size, job.batch, job.seed)
        batches = progress(loader, desc=f"{job.method} importance", total=min(len(loader), job.taylor_batches),
                           enabled=job.show_progress)
        loss_fn = YoloLoss(model.config)
        device = pick_device(job.device)

        def batch_loss(m: YOLOv3, batch: Any) -> torch.Tensor:
            return loss_fn(m(batch.images.to(device)), batch.targets)[0]

        kind = TaylorImportance if job.method == "taylor" else TaylorGateImportance
        return kind(batches, batch_loss, job.taylor_batches)
    raise ValueError(f"unknown pruning method {job.method!r}; choose one of {', '.join(CRITERIA)}")


def effective_fold(job: PruneJob) -> str:
    """``auto``: fold everywhere only when the BatchNorm statistics are kept; with
    recalibration fold nowhere. Recalibration re-measures what the fold approximates in
    every BatchNorm consumer, and the constant folded into an output convolution's bias is
    then stale: on the 150-epoch baseline at Taylor 0.5, val AP50 after recalibration was
    0.355 without the fold and 0.276 with it (both 0.00-0.01 before recalibration;
    ``docs/pruning.md``, "Does the fold help?")."""
    if job.fold != "auto":
        return job.fold
    return "none" if job.data is not None and job.recalibration_batches > 0 else "all"


def prune_once(model: YOLOv3, criterion: Importance, spec: PruneSpec, device: torch.device | str = "cpu",
               fold: str = "all") -> tuple[YOLOv3, dict[str, np.ndarray]]:
    """Score (on ``device``), plan and slim (on the CPU): a new smaller model on the CPU and
    the kept indices per group."""
    groups = coupling_groups(model.config.spp)
    scores = criterion(model.to(device))
    keep = plan_keep(group_scores(scores, groups), spec)
    return slim(model.cpu(), keep, fold), keep


def recalibrate(job: PruneJob, model: YOLOv3, loader: DataLoader | None) -> YOLOv3:
    """Fresh BatchNorm statistics from training images (no-op without data)."""
    if loader is None or not job.recalibration_batches:
        return model
    device = pick_device(job.device)
    batches = progress(loader, desc="BatchNorm recalibration", enabled=job.show_progress,
                       total=min(len(loader), job.recalibration_batches))
    recalibrate_batchnorm(model.to(device), batches, job.recalibration_batches, device)
    return model.cpu()


def step_ratios(total: float, steps: int) -> list[float]:
    """Per-step ratios (of the current width) that compound to ``total`` of the original."""
    out, kept = [], 1.0
    for k in range(1, steps + 1):
        target = 1 - total * k / steps
        out.append(1 - target / kept)
        kept = target
    return out


def summary(model: YOLOv3) -> dict[str, Any]:
    return {"params": count_parameters(model),
            "gflops": round(count_flops(model, model.config.input_size) / 1e9, 4)}


def finetune_config(job: PruneJob, start: Path, epochs: int, run_dir: Path) -> TrainConfig:
    """The fine-tune of a pruned checkpoint: the baseline recipe from ``start``'s weights at
    ``job.finetune_lr``, a warm-up of a third of the run (at most one epoch) and mosaic off
    for the last third (at most 10 epochs); copy-paste, bubbles and multi-scale as the job asks."""
    augment = dataclasses.replace(AugmentConfig.other_scopes(), copy_paste=job.copy_paste,
                                  distractors=job.distractors)
    return TrainConfig(data=str(job.data), out=str(run_dir), init_weights=str(start), epochs=epochs,
                       augment=augment, multi_scale=job.multi_scale,
                       lr=job.finetune_lr, warmup_epochs=min(1.0, epochs / 3),
                       close_mosaic=max(1, min(10, epochs // 3)), fit_anchors=False,
                       img=load_checkpoint(start).config.input_size, batch=job.batch, seed=job.seed,
                       threads=job.threads, workers=job.workers, device=job.device,
                       distill_from=str(job.weights) if job.distill_weight > 0 else None,
                       distill_weight=job.distill_weight,
                       ema_decay=TrainConfig.ema_decay if job.ema_decay is None else job.ema_decay,
                       ema_tau=TrainConfig.ema_tau if job.ema_tau is None else job.ema_tau)


def _finetune(job: PruneJob, start: Path, epochs: int, run_dir: Path) -> tuple[Path, bool]:
    """Fine-tune and return the checkpoint that carries on (the epoch best on val, or the
    last: the end of the schedule; the best of many noisy epochs is an optimistic pick) and
    whether this call trained. Under ``job.resume`` a fine-tune that saved an epoch goes on
    from it, under the recipe it started with or not at all, and one that has finished is
    not opened again."""
    kept = run_dir / ("last.safetensors" if job.keep == "last" else "best.safetensors")
    cfg = finetune_config(job, start, epochs, run_dir)
    resume = job.resume and ((run_dir / STATE_FILE).is_file() or (run_dir / "last.safetensors").is_file())
    if resume:
        # The start and the teacher are checked by the job record (the base's digest).
        refuse_other_recipe(run_dir, cfg, PLACE_FIELDS + CHECKPOINT_PATH_FIELDS)
        if checkpoint_epoch(run_dir / "last.safetensors") == epochs and kept.is_file():
            return kept, False
    trainer = Trainer(cfg, resume=resume, show_progress=job.show_progress, deadline=job.deadline)
    trainer.run()
    if trainer.stopped_early:
        raise StoppedAtDeadline(f"{run_dir}: fine-tune stopped at the deadline")
    return kept, True


def job_record(job: PruneJob, trained_size: int) -> dict[str, Any]:
    """What makes two calls the same prune: every setting but where it runs, whether data was
    given (it decides recalibration and the fold), and the baseline by its network (tensors
    and architecture, ``network_digest``) and the size it is pruned at: a path may move and a
    re-shipped header may change between sittings, the network may not."""
    record = {f.name: getattr(job, f.name) for f in dataclasses.fields(job) if f.name not in JOB_PLACE_FIELDS}
    return {**record, "data_given": job.data is not None, "base_network_sha256": network_digest(job.weights),
            "base_trained_size": trained_size}


def check_work_folder(job: PruneJob, work: Path, record: dict[str, Any]) -> None:
    """Refuse a resume under other settings when it would reuse saved work, and a fresh start
    over another prune's steps (a later resume would mix them); then record this job."""
    saved = work / JOB_FILE
    reusable = any(work.glob("step*_pruned.safetensors")) or any(work.glob("step*_finetune"))
    if job.resume and reusable and saved.is_file():
        defaults = {f.name: f.default for f in dataclasses.fields(PruneJob)
                    if f.default is not dataclasses.MISSING and f.name not in JOB_PLACE_FIELDS}
        before = {**defaults, **json.loads(saved.read_text())}  # a field added since reads as its default
        differ = sorted(k for k in set(before) | set(record) if before.get(k) != record.get(k))
        if differ:
            raise SystemExit(f"{saved}: this prune was started with other settings ({', '.join(differ)}); "
                             "resume it with the same flags, or use another --out")
    elif reusable:
        if job.resume:
            raise SystemExit(f"{work}: holds prune steps but no {JOB_FILE} saying how they were made; "
                             "use another --out (or remove the folder) to start again")
        raise SystemExit(f"{work}: holds an earlier prune's steps; pass --resume to continue it, "
                         "or use another --out (or remove the folder) to start again")
    atomic_write_bytes(saved, json.dumps(record, indent=2).encode())


def run_prune(job: PruneJob) -> dict[str, Any]:
    if job.threads:
        torch.set_num_threads(job.threads)
    base = load_checkpoint(job.weights)
    model = base.model_at_trained_size()  # a baseline shipped to run larger is pruned where it was trained
    before = summary(model)
    work = job.out.with_suffix("")
    work.mkdir(parents=True, exist_ok=True)
    base_sha256 = hashlib.sha256(job.weights.read_bytes()).hexdigest()
    remove_stale_temporaries(work)  # a step cut while being written
    check_work_folder(job, work, job_record(job, model.config.input_size))
    per_step_epochs = job.finetune_epochs // job.steps if job.finetune_epochs else 0
    worked = False  # whether this call has scored or trained: a sitting always makes progress
    for k, ratio in enumerate(step_ratios(job.ratio, job.steps), start=1):
        if worked and job.deadline is not None and time.monotonic() > job.deadline:
            raise StoppedAtDeadline(f"{work}: stopped at the deadline before step {k}")
        step_path, keep_path = work / f"step{k}_pruned.safetensors", work / f"step{k}_keep.json"
        if job.resume and step_path.is_file() and keep_path.is_file():
            # Saved after its channel list: this step was scored, slimmed and recalibrated.
            model = load_checkpoint(step_path).model
            if job.show_progress:
                print(f"step {k}: resuming from {step_path} (not scored again)")
        else:
            spec = PruneSpec(ratio, job.scope, divisor=job.divisor)
            # One loader (one image cache) per step serves both Taylor scoring and recalibration.
            loader = (training_batches(job.data, model.config.input_size, job.batch, job.seed + k - 1)
                      if job.data else None)
            model, keep = prune_once(model, make_criterion(job, model, loader), spec, pick_device(job.device),
                                      effective_fold(job))
            atomic_write_bytes(keep_path, json.dumps({g: idx.tolist() for g, idx in keep.items()}).encode())
            model = recalibrate(job, model, loader)
            save_checkpoint(step_path, model, {"pruned_step": k})
            worked = True
        if per_step_epochs:
            if job.data is None:
                raise ValueError("fine-tuning needs --data")
            kept, trained = _finetune(job, step_path, per_step_epochs, work / f"step{k}_finetune")
            worked = worked or trained
            model = load_checkpoint(kept).model
    after = summary(model)
    meta = {
        "pruning": {"method": job.method, "ratio": job.ratio, "scope": job.scope, "steps": job.steps,
                    "finetune_epochs": job.finetune_epochs, "divisor": job.divisor, "fold": effective_fold(job),
                    "distill_weight": job.distill_weight, "kept_epoch": job.keep if per_step_epochs else None,
                    "ema_decay": job.ema_decay if job.ema_decay is not None else TrainConfig.ema_decay,
                    "ema_tau": job.ema_tau if job.ema_tau is not None else TrainConfig.ema_tau,
                    "recalibration_batches": job.recalibration_batches if job.data else 0,
                    "copy_paste": job.copy_paste, "distractors": job.distractors, "multi_scale": job.multi_scale,
                    "base_checkpoint": job.weights.name,
                    "base_sha256": base_sha256},
        "before": before, "after": after,
        "base_metadata": {k: v for k, v in base.metadata.items() if k in ("data", "train_split", "recipe")},
    }
    save_checkpoint(job.out, model, meta)
    return meta

