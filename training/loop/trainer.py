"""The training loop: seeded, resumable, EMA-averaged, with per-epoch logs and plots.

A run folder holds ``last.safetensors`` and ``best.safetensors`` (EMA weights, loadable
like any checkpoint), ``state.safetensors`` (raw weights, EMA and optimiser state for
``--resume``), ``results.csv``/``results.jsonl`` and PNG plots. All writes are atomic,
so a crash or Ctrl-C loses at most the epoch in progress. An epoch writes its log row, then
the state, then ``last``, then ``best``; the next start removes the temporaries a killed
write left behind, and ``--resume`` works from whatever the kill left (the state, else
``last`` with a fresh optimiser).

Multi-GPU: start with ``torchrun --nproc_per_node N -m app train ...``; the loop picks up
the process group from the environment (NCCL on CUDA, gloo on CPU) and only rank 0
evaluates and writes.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader

from models import (
    Checkpoint,
    CheckpointError,
    YoloConfig,
    YOLOv3,
    config_for,
    load_checkpoint,
    read_header,
    save_checkpoint,
    with_input_size,
)
from models.checkpoint import atomic_write_bytes, remove_stale_temporaries
from models.darknet_weights import load_darknet_weights
from training.data.anchors import box_sizes_at, kmeans_anchors
from training.data.augment.multi_scale import rescale_batch, size_choices, size_for_step
from training.data.augment.pipeline import AugmentConfig
from training.data.data_check import open_checked, print_problems, require_samples
from training.data.datasets import DatasetIndex, Sample
from training.data.loader import ImageCache, TrainDataset, collate
from training.data.negatives import polyp_free_frames
from training.data.sampling import EpochPlan
from training.evaluation.evaluate import evaluate_model
from training.loop.distill import DistillationLoss
from training.loop.ema import ModelEMA
from training.loop.hard_crops import frame_of, load_crops, mine_hard_crops, save_crops
from training.loop.hard_negatives import hardness_weights, highest_scores, load_weights, save_weights
from training.loop.loss import LossConfig, YoloLoss
from training.loop.precision import autocast_dtype
from training.loop.run_log import RunLog
from training.loop.train_state import STATE_FILE, TrainState, load_train_state, save_train_state
from training.progress import progress

FITNESS_KEY = "ap50"
LAST_FILE = "last.safetensors"
BEST_FILE = "best.safetensors"


def quiet_opencv_threads(_worker_id: int) -> None:
    """Loader workers run OpenCV single-threaded: its own pool would fight the training
    threads for the same cores."""
    cv2.setNumThreads(0)


def alarm_columns(metrics: dict[str, Any]) -> dict[str, float]:
    """The per-epoch log's false-alarm columns: at recall 0.90 on val, the threshold and the
    share of polyp-free val frames with a box."""
    point = metrics.get("operating_points", {}).get("recall_0.90")
    if point is None:
        return {}
    columns = {"val_threshold_r90": point["threshold"]}
    if "frames_with_false_box" in point:  # only when the split had polyp-free frames to count on
        columns["val_alarm_frames_r90"] = point["frames_with_false_box"]
    return columns


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


#: What runs saved before these fields existed did: no polyp-free samples, float32, NCHW.
LEGACY_DEFAULTS: dict[str, Any] = {"precision": "fp32", "channels_last": False, "mine_negatives": False,
                                   "negatives": None, "negative_fraction": 0.0, "multi_scale": 0.0}


@dataclass
class TrainConfig:
    data: str
    out: str = "runs/train"
    model: str = "yolov3-spp"
    width: float = 0.25
    new_coords: bool = True      # Darknet's new_coords decode + three-cell assignment
    img: int = 256
    epochs: int = 100
    batch: int = 16
    lr: float = 0.002
    weight_decay: float = 5e-4
    warmup_epochs: float = 3.0
    final_lr_fraction: float = 0.05
    close_mosaic: int = 10
    grad_clip: float = 10.0
    ema_decay: float = 0.9999        # the EMA's decay cap; it ramps up as cap * (1 - exp(-updates / ema_tau))
    ema_tau: float = 2000.0          # ramp time constant in optimiser steps (YOLOv5/v8's 2000)
    seed: int = 0
    workers: int = 1
    threads: int = 0               # torch CPU threads; 0 keeps torch's default
    device: str = "auto"
    train_split: str = "train"
    val_split: str = "val"
    fit_anchors: bool = True
    init_weights: str | None = None  # a PolypScope checkpoint to start from (fine-tuning a pruned model)
    bn_sparsity: float = 0.0         # L1 penalty on BatchNorm gamma (network-slimming sparsity training)
    distill_from: str | None = None  # a teacher checkpoint (same head layout): knowledge distillation
    distill_weight: float = 1.0
    pretrained: str | None = None   # Darknet .weights (yolov3.weights or darknet53.conv.74)
    pretrained_classes: int = 80    # class count the .weights file was trained with
    eval_every: int = 1
    precision: str = "auto"          # auto: fp16 on CUDA, bf16 on a CPU with native bf16, else fp32
    channels_last: bool = True       # NHWC memory: faster convolutions on CPU (oneDNN) and tensor cores
    mine_negatives: bool = True      # polyp-free crops mined from the training images
    negatives: str | None = None     # a folder of polyp-free frames (--negatives DIR)
    negative_fraction: float = 0.25  # polyp-free draws per epoch, as a share of the polyp images
    hard_negatives_from: float = 0.3  # share of the epochs after which hard-negative mining starts
    hard_negatives_every: int = 5    # epochs between re-scoring the negatives
    hard_crops: int = 0              # at each re-scoring, crops cut per polyp frame where the model fires (0: off)
    multi_scale: float = 0.0         # each batch at a random size in img*(1 -/+ this), stride 32 (0: off)
    augment: AugmentConfig = field(default_factory=AugmentConfig.other_scopes)
    loss: LossConfig = field(default_factory=LossConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        """A saved run's config. Fields a run saved before they existed take the values that
        reproduce how it ran then, not today's defaults (a resumed run keeps its recipe)."""
        d = {**LEGACY_DEFAULTS, **d}
        d["augment"] = AugmentConfig(**d.get("augment", {}))
        loss = dict(d.get("loss", {}))
        if "scale_balance" in loss:
            loss["scale_balance"] = tuple(loss["scale_balance"])
        d["loss"] = LossConfig(**loss)
        return cls(**d)


@dataclass
class DistInfo:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device: torch.device) -> DistInfo:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def pick_device(name: str, local_rank: int = 0) -> torch.device:
    if name == "auto":
        return torch.device(f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def lr_at(step: int, total: int, warmup: int, base: float, final_fraction: float) -> float:
    """Linear warm-up to ``base``, then cosine decay that lands on ``base * final_fraction``
    at the last step (``total - 1``), so even a short fine-tune ends on its low-lr tail."""
    if step < warmup:
        return base * (step + 1) / warmup
    progress_ = min(1.0, (step - warmup) / max(1, total - 1 - warmup))
    return base * (final_fraction + (1 - final_fraction) * 0.5 * (1 + math.cos(math.pi * progress_)))


def warmup_steps(warmup_epochs: float, steps_per_epoch: int, total_steps: int) -> int:
    """The warm-up asked for, in steps; never more than half the run, so a short
    fine-tune still decays. (An earlier floor of 100 steps overrode short warm-ups:
    a 2-epoch fine-tune of 49 steps per epoch ended at 0.98x the peak lr.)"""
    return min(round(warmup_epochs * steps_per_epoch), total_steps // 2)


def add_bn_sparsity(model: torch.nn.Module, strength: float) -> None:
    """Subgradient of ``strength * sum |gamma|`` over every BatchNorm (call after backward):
    drives unimportant channels' scales towards zero, so |gamma| becomes a clean pruning
    criterion (Liu et al. 2017, network slimming)."""
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d) and m.weight.grad is not None:
            m.weight.grad.add_(torch.sign(m.weight.detach()), alpha=strength)


def build_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """AdamW with weight decay on convolution weights only (not BatchNorm or biases)."""
    decay, no_decay = [], []
    for _name, p in model.named_parameters():
        (decay if p.ndim == 4 else no_decay).append(p)
    return torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=cfg.lr, betas=(0.937, 0.999),
    )


@dataclass
class StartPoint:
    """Where a run begins: the model config, the first epoch (0-based), the best fitness and
    its epoch so far, and what to load into the new model: a full training ``state`` or
    plain ``weights`` (``--init-weights``, or ``last`` when resuming without a state)."""

    config: YoloConfig
    epoch: int = 0
    best_fitness: float = -1.0
    best_epoch: int | None = None
    state: TrainState | None = None
    weights: dict[str, torch.Tensor] | None = None
    anchor_info: dict[str, float] = field(default_factory=dict)


def checkpoint_epoch(path: Path) -> int | None:
    """The epoch a run's checkpoint was written at, or ``None`` when it is missing or unreadable."""
    try:
        return int(read_header(path)[1].get("epoch", -1))
    except (CheckpointError, ValueError, TypeError):
        return None


def best_so_far(out: Path, last: Checkpoint) -> tuple[float, int | None]:
    """Fitness and epoch of the run's best checkpoint (``last``'s when ``best`` is unreadable)."""
    try:
        meta = read_header(out / BEST_FILE)[1]
    except CheckpointError:
        meta = last.metadata
    fitness = meta.get("val_metrics", {}).get(FITNESS_KEY)
    return (float(fitness), meta.get("epoch")) if fitness is not None else (-1.0, None)


def fit_anchor_config(model_config: YoloConfig, train: DatasetIndex, size: int, seed: int) -> tuple[YoloConfig, dict[str, float]]:
    fit = kmeans_anchors(box_sizes_at(train.samples, size), k=9, seed=seed)
    anchors = tuple((round(float(w), 2), round(float(h), 2)) for w, h in fit.anchors)
    return model_config.replace(anchors=anchors), {"anchor_mean_iou": fit.mean_best_iou,
                                                   "anchor_bpr": fit.best_possible_recall}


class Trainer:
    """Owns one training run; ``run()`` trains to the last epoch (or resumes there)."""

    def __init__(self, cfg: TrainConfig, *, resume: bool = False, show_progress: bool = True,
                 deadline: float | None = None) -> None:
        """``deadline`` (a ``time.monotonic()``): stop before an epoch that would end after
        it, judged by the longest epoch of this call (one with a hard-negative pass or a
        validation is longer), having trained at least one epoch; ``stopped_early`` then
        says so and the run resumes with ``resume=True``."""
        self.cfg = cfg
        self.deadline = deadline
        self.stopped_early = False
        self.out = Path(cfg.out)
        self.show_progress = show_progress
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        self.device = pick_device(cfg.device, int(os.environ.get("LOCAL_RANK", "0")))
        self.dist = init_distributed(self.device)
        self.resume = resume

    # -- set-up ---------------------------------------------------------------------
    def _say(self, message: str) -> None:
        """A note or warning about the run on stderr (rank 0 only)."""
        if self.dist.is_main:
            print(message, file=sys.stderr)

    def _prepare(self) -> None:
        cfg = self.cfg
        size_choices(cfg.img, cfg.multi_scale)  # a bad spread fails here, not at the first batch
        if cfg.hard_crops < 0:
            raise ValueError(f"hard_crops must be >= 0 (crops per polyp frame), not {cfg.hard_crops}")
        if cfg.hard_crops and self.dist.world > 1:
            raise ValueError("hard_crops: the crop pool is mined on one process; train it on one GPU or the CPU")
        torch.manual_seed(cfg.seed)
        np.random.seed(cfg.seed)
        self.train_index = self._open_split(cfg.train_split)
        self.val_index = self._open_split(cfg.val_split)
        start = self._resume_point() if self.resume else self._fresh_start(self.train_index)
        self.start_epoch, self.best_fitness, self.best_epoch = start.epoch, start.best_fitness, start.best_epoch
        self.anchor_info = start.anchor_info
        self.resumed_state = start.state
        self.model = YOLOv3(start.config)
        if start.weights is not None:
            self.model.load_state_dict(start.weights)
        if not self.resume and cfg.pretrained:
            report = load_darknet_weights(self.model, cfg.pretrained, file_num_classes=cfg.pretrained_classes)
            print(f"{cfg.pretrained}: loaded {len(report.loaded)} layers, "
                  f"{len(report.skipped)} left freshly initialised")
        self.model.to(self.device)
        if cfg.channels_last:
            self.model.to(memory_format=torch.channels_last)
        self.optimizer = build_optimizer(self.model, cfg)
        self.ema = ModelEMA(self.model, cfg.ema_decay, cfg.ema_tau)
        if start.state is not None:
            start.state.apply(self.model, self.ema, self.optimizer)
        self.loss = YoloLoss(start.config, cfg.loss)
        self.teacher, self.distill = None, None
        if cfg.distill_from:
            self.teacher = load_checkpoint(cfg.distill_from).model.to(self.device).eval()
            if cfg.channels_last:
                self.teacher.to(memory_format=torch.channels_last)
            for p in self.teacher.parameters():
                p.requires_grad_(False)
            self.distill = DistillationLoss(start.config, cfg.loss, cfg.distill_weight)
        self._build_loader()
        if self.resume and start.state is None:  # resumed from weights alone: keep the EMA's decay ramp
            self.ema.updates = self.start_epoch * self.steps_per_epoch
        self.amp_dtype = autocast_dtype(cfg.precision, self.device)
        # Only float16 needs loss scaling; bfloat16 has float32's exponent range.
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype == torch.float16)
        if self.dist.is_main:
            self._say(f"precision: {self.amp_dtype or torch.float32} autocast on {self.device}"
                      f"{', channels-last' if cfg.channels_last else ''}")
        self.log = RunLog(self.out) if self.dist.is_main else None

    def _open_split(self, split: str) -> DatasetIndex:
        """The usable samples of ``split`` as ``data check`` sees them; its problems as warnings."""
        index = open_checked(self.cfg.data, split, show_progress=self.show_progress and self.dist.is_main)
        require_samples(index, split)
        if self.dist.is_main:
            print_problems(index, f"split {split!r}")
        return index

    def _fresh_start(self, train: DatasetIndex) -> StartPoint:
        cfg = self.cfg
        if cfg.init_weights:
            init = load_checkpoint(cfg.init_weights)
            model = init.model
            if model.config.input_size != cfg.img:  # e.g. a baseline shipped to run at 352, trained on at 320
                model = with_input_size(model, cfg.img)
            return StartPoint(model.config, weights=model.state_dict())
        model_config = config_for(cfg.model, width=cfg.width, input_size=cfg.img, new_coords=cfg.new_coords,
                                  num_classes=len(train.class_names), class_names=train.class_names)
        if not cfg.fit_anchors:
            return StartPoint(model_config)
        model_config, anchor_info = fit_anchor_config(model_config, train, cfg.img, cfg.seed)
        return StartPoint(model_config, anchor_info=anchor_info)

    def _resume_point(self) -> StartPoint:
        """From ``state.safetensors`` when there is one; else from ``last.safetensors`` with
        a fresh optimiser (a run stopped before its first state write, or one written by
        code that saved the state last)."""
        state = load_train_state(self.out)
        if state is not None:
            self._say(f"resuming from {self.out / STATE_FILE} (epoch {state.epoch + 1} done)")
            return StartPoint(state.model_config, state.epoch + 1, state.best_fitness, state.best_epoch, state=state)
        last = self.out / LAST_FILE
        if not last.is_file():
            raise FileNotFoundError(f"{self.out}: nothing to resume (no {STATE_FILE} and no {LAST_FILE})")
        ckpt = load_checkpoint(last)
        done = int(ckpt.metadata.get("epoch", 0))
        best_fitness, best_epoch = best_so_far(self.out, ckpt)
        self._say(f"warning: {self.out / STATE_FILE} is missing: resuming from {LAST_FILE} (epoch {done} done) "
                  "with the optimiser restarted")
        return StartPoint(ckpt.config, done, best_fitness, best_epoch, weights=ckpt.model.state_dict())

    def _build_loader(self) -> None:
        """Image caches, the epoch plan, the loader and the schedule's step counts.

        The training cache holds the split's polyp images first, then its polyp-free
        items: the split's own negatives, crops mined from its polyp images, and the
        ``--negatives`` folder. Validation mines its own split the same way."""
        cfg = self.cfg
        positives = self.train_index.positives
        negatives = self._polyp_free(self.train_index, cfg.negatives)
        self.train_cache = ImageCache(positives + negatives, cfg.img)
        self.negative_cache = self.train_cache.view(len(positives), len(positives) + len(negatives))
        self.val_cache = ImageCache(self.val_index.samples, cfg.img)
        # Validation mines its crops whatever training does: the false-alarm figures of a run
        # trained without negatives must be measured like everyone else's (issue 11's ablation).
        self.val_negative_cache = ImageCache(self._polyp_free(self.val_index, None, mine=True), cfg.img)
        self.positive_count, self.fixed_negative_count = len(positives), len(negatives)
        if cfg.hard_crops and not (negatives and cfg.negative_fraction > 0 and cfg.hard_negatives_every > 0):
            self._say("warning: --hard-crops needs polyp-free draws and hard-negative passes (mined crops or "
                      "--negatives, --negative-fraction > 0); no crops will be cut")
        if self.dist.world > 1:
            self.ddp = torch.nn.parallel.DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        else:
            self.ddp = None
        self._make_loader()
        self.steps_per_epoch = len(self.loader)
        self.total_steps = self.steps_per_epoch * cfg.epochs
        self.warmup_steps = warmup_steps(cfg.warmup_epochs, self.steps_per_epoch, self.total_steps)
        if self.dist.is_main:
            self._say(f"training on {len(positives)} polyp images and {len(negatives)} polyp-free items "
                      f"({self.sampler.negatives_per_epoch} drawn per epoch); validating on "
                      f"{len(self.val_cache)} images and {len(self.val_negative_cache)} polyp-free frames")

    def _make_loader(self, negative_weights: np.ndarray | None = None) -> None:
        """Dataset, epoch plan and loader over the training cache as it stands: made once,
        and again when the pool of hard-negative crops changes (new loader workers, which
        hold a copy of the cache made when they start, so that they see the new crops).
        The steps per epoch do not change: the draws per epoch depend on the polyp images."""
        cfg = self.cfg
        positives, negatives = self.positive_count, len(self.train_cache) - self.positive_count
        share = cfg.negative_fraction / (1 + cfg.negative_fraction) if negatives else 0.0
        self.dataset = TrainDataset(self.train_cache, cfg.img, cfg.augment, cfg.seed, positives=positives,
                                    negative_share=share, tile_negatives=self.fixed_negative_count)
        self.sampler = EpochPlan(positives, negatives, negative_fraction=cfg.negative_fraction,
                                 seed=cfg.seed, mosaic_epochs=cfg.epochs - cfg.close_mosaic,
                                 rank=self.dist.rank, world=self.dist.world)
        if negative_weights is not None:
            self.sampler.set_negative_weights(negative_weights)
        per_rank = max(1, cfg.batch // self.dist.world) if self.dist.world > 1 else cfg.batch
        workers = getattr(getattr(self, "loader", None), "_iterator", None)
        if workers is not None and hasattr(workers, "_shutdown_workers"):
            workers._shutdown_workers()  # the old loader's persistent workers: stopped now, not at GC
        self.loader = DataLoader(self.dataset, batch_size=per_rank, sampler=self.sampler, drop_last=True,
                                 num_workers=cfg.workers, collate_fn=collate,
                                 persistent_workers=cfg.workers > 0, worker_init_fn=quiet_opencv_threads)

    def _set_hard_crops(self, crops: list[tuple[Sample, float]], weights: np.ndarray | None = None) -> None:
        """Swap the pool of hard-negative crops (:mod:`training.loop.hard_crops`) at the end
        of the training cache, decode it, and remake the loader that draws from it."""
        start = self.positive_count + self.fixed_negative_count
        self.train_cache.replace_tail(start, [c for c, _ in crops])
        self.train_cache.fill()  # only the new crops are decoded; before the workers fork
        self.negative_cache = self.train_cache.view(self.positive_count, len(self.train_cache))
        self._make_loader(weights)
        self.dataset.fill()

    def _polyp_free(self, index: DatasetIndex, folder: str | None, mine: bool | None = None) -> list[Sample]:
        """The split's polyp-free samples (:func:`~training.data.negatives.polyp_free_frames`),
        with crops mined from its polyp frames if ``mine`` (default: as training mines)."""
        frames, problems = polyp_free_frames(index, folder, self.cfg.mine_negatives if mine is None else mine,
                                             show_progress=self.show_progress and self.dist.is_main)
        for problem in problems:
            self._say(f"warning: {folder}: {problem}")
        return frames

    def _mine_hard_negatives(self, epoch: int) -> None:
        """Re-weight the polyp-free items by how strongly the EMA model fires on them; with
        ``hard_crops``, first cut a new pool of crops where it fires on the polyp frames'
        background (``hard_crops`` is refused with several processes, so rank 0 is alone)."""
        cfg = self.cfg
        fixed = self.train_cache.view(self.positive_count, self.positive_count + self.fixed_negative_count)
        if self.dist.is_main:
            scores = highest_scores(self.ema.module, fixed, cfg.img)
        else:
            scores = np.zeros(len(fixed))
        if self.dist.world > 1:  # every rank must draw the same epoch order: rank 0's scores
            shared = torch.from_numpy(scores).to(self.device)
            dist.broadcast(shared, src=0)
            scores = shared.cpu().numpy()
        weights = hardness_weights(scores)
        crops_note = ""
        if cfg.hard_crops > 0:
            crops = mine_hard_crops(self.ema.module, self.train_cache.view(0, self.positive_count), cfg.img,
                                    per_frame=cfg.hard_crops)
            weights = np.concatenate([weights, hardness_weights(np.array([score for _, score in crops]))])
            save_crops(self.out, epoch + 1, crops)  # before the weights, whose ids name the crops
            self._set_hard_crops(crops, weights)
            frames = len({frame_of(s) for s, _ in crops})
            crops_note = f"; {len(crops)} hard crops cut from {frames} polyp frames' background"
        else:
            self.sampler.set_negative_weights(weights)
        if self.dist.is_main:
            save_weights(self.out, epoch + 1, [s.id for s in self.negative_cache.samples], weights)
            self._say(f"hard negatives (epoch {epoch + 1}): {int((scores > 0.25).sum())} of {len(scores)} "
                      f"polyp-free items score > 0.25 (the app's default threshold); highest {scores.max():.2f}"
                      + crops_note)

    def _hard_negative_epoch(self, epoch: int) -> bool:
        cfg = self.cfg
        first = int(cfg.hard_negatives_from * cfg.epochs)
        return (len(self.negative_cache) > 0 and cfg.negative_fraction > 0 and cfg.hard_negatives_every > 0
                and epoch + 1 >= first and (epoch + 1 - first) % cfg.hard_negatives_every == 0
                and epoch + 1 < cfg.epochs)

    # -- the loop -------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        if self.dist.is_main and self.out.is_dir():
            self._remove_stale_temporaries()  # first: even a run that cannot start leaves none behind
        self._prepare()
        cfg = self.cfg
        if self.dist.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(self.out / "train_config.json", json.dumps(cfg.to_dict(), indent=2).encode())
            if self.resumed_state is not None:
                self._catch_up_checkpoints(self.resumed_state)
        # Fill the image caches before the first epoch (and before any worker forks).
        self.train_cache.fill()
        self.dataset.fill()
        self.val_cache.fill()
        self.val_negative_cache.fill()
        metrics: dict[str, Any] = {}
        if self.start_epoch and cfg.hard_crops > 0:
            pool = load_crops(self.out, self.start_epoch, {f.id: f for f in self.train_index.positives})
            if pool:
                self._set_hard_crops(pool)
        if self.start_epoch and len(self.negative_cache):
            saved = load_weights(self.out, [s.id for s in self.negative_cache.samples], self.start_epoch)
            if saved is not None:
                self.sampler.set_negative_weights(saved)
        longest = 0.0
        for epoch in range(self.start_epoch, cfg.epochs):
            if epoch > self.start_epoch and self._out_of_time(longest):
                self.stopped_early = True
                self._say(f"stopped at the deadline after epoch {epoch} of {cfg.epochs}: "
                          f"go on with --resume (--out {self.out})")
                break
            started = time.monotonic()
            losses = self._train_epoch(epoch)
            if self._hard_negative_epoch(epoch):
                self._mine_hard_negatives(epoch)
            if self.dist.is_main:
                metrics = self._end_epoch(epoch, losses, time.monotonic() - started)
            longest = max(longest, time.monotonic() - started)
        if self.dist.world > 1:
            dist.barrier()
        return metrics

    def _out_of_time(self, epoch_seconds: float) -> bool:
        """Whether another epoch as long as ``epoch_seconds`` would end past the deadline (one
        decision for every process of a distributed run)."""
        if self.deadline is None:
            return False
        stop = torch.tensor([float(time.monotonic() + epoch_seconds > self.deadline)], device=self.device)
        if self.dist.world > 1:
            dist.all_reduce(stop, op=dist.ReduceOp.MAX)
        return bool(stop.item())

    def _train_epoch(self, epoch: int) -> dict[str, float]:
        cfg = self.cfg
        self.sampler.set_epoch(epoch)
        net = self.ddp or self.model
        net.train()
        parts_logged = ("box", "obj", "cls", "kd") if self.teacher is not None else ("box", "obj", "cls")
        sums = {**dict.fromkeys(parts_logged, 0.0), "total": 0.0}
        bar = progress(self.loader, desc=f"epoch {epoch + 1}/{cfg.epochs}",
                       enabled=self.show_progress and self.dist.is_main, leave=False)
        count = 0
        for i, batch in enumerate(bar):
            step = epoch * self.steps_per_epoch + i
            for group in self.optimizer.param_groups:
                group["lr"] = lr_at(step, self.total_steps, self.warmup_steps, cfg.lr, cfg.final_lr_fraction)
            images = batch.images.to(self.device, non_blocking=True)
            targets = batch.targets
            if cfg.multi_scale:
                size = size_for_step(step, cfg.seed, cfg.img, cfg.multi_scale)
                images, targets = rescale_batch(images, targets, size)
            if cfg.channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            with torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None):
                raw = net(images)
            loss, parts = self.loss([r.float() for r in raw], targets)
            if self.teacher is not None:
                with torch.no_grad(), torch.autocast(self.device.type, dtype=self.amp_dtype,
                                                     enabled=self.amp_dtype is not None):
                    teacher_raw = self.teacher.forward_raw(images)
                kd, parts["kd"] = self.distill([r.float() for r in raw], [t.float() for t in teacher_raw])
                loss = loss + kd
            if not torch.isfinite(loss):
                raise TrainingDiverged(
                    f"loss became {float(loss.detach())} at epoch {epoch + 1}, step {i + 1} "
                    f"(parts {parts}); stopped. The last good checkpoint is kept in {self.out}. "
                    "Try a lower --lr or check the data with 'polypscope data check'."
                )
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            self.scaler.unscale_(self.optimizer)
            if cfg.bn_sparsity:
                add_bn_sparsity(self.model, cfg.bn_sparsity)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.ema.update(self.model)
            count += 1
            for k in parts_logged:
                sums[k] += parts[k]
            sums["total"] += float(loss.detach()) / images.shape[0]
            if hasattr(bar, "set_postfix"):
                bar.set_postfix(loss=f"{sums['total'] / count:.4f}", lr=f"{self.optimizer.param_groups[0]['lr']:.2e}")
        return {k: v / max(count, 1) for k, v in sums.items()}

    def _end_epoch(self, epoch: int, losses: dict[str, float], seconds: float) -> dict[str, Any]:
        cfg = self.cfg
        row: dict[str, Any] = {"epoch": epoch + 1, "seconds": round(seconds, 1),
                               "lr": self.optimizer.param_groups[0]["lr"],
                               **{f"loss_{k}": v for k, v in losses.items()}}
        meta, evaluator, improved = None, None, False
        if (epoch + 1) % cfg.eval_every == 0 or epoch == cfg.epochs - 1:
            val_metrics, evaluator = evaluate_model(self.ema.module, self.val_cache, cfg.img,
                                                    self.model.config.class_names, negatives=self.val_negative_cache)
            row.update({f"val_{k}": v for k, v in val_metrics.items() if isinstance(v, float)})
            row.update(alarm_columns(val_metrics))
            meta = self._checkpoint_meta(epoch, val_metrics)
            improved = float(val_metrics[FITNESS_KEY]) > self.best_fitness
            if improved:
                self.best_fitness, self.best_epoch = float(val_metrics[FITNESS_KEY]), epoch + 1
        row["best_val_ap50"] = self.best_fitness
        self.log.append(row)  # a resumed run redoes this epoch's row unless the state below lands
        self._save_epoch(epoch, meta, improved)
        if improved and evaluator is not None:
            self.log.save_pr_curve(evaluator.image_results(), f"val PR curve (epoch {epoch + 1})")
        self.log.plot()
        return row

    def _save_epoch(self, epoch: int, meta: dict[str, Any] | None, improved: bool) -> None:
        """State first, then ``last``, then ``best`` (each written atomically). A kill between
        two writes leaves the state ahead of the checkpoints, never behind: resuming from it
        loses nothing and rewrites them (:meth:`_catch_up_checkpoints`)."""
        save_train_state(self.out, epoch, self.best_fitness, self.model, self.ema, self.optimizer,
                         best_epoch=self.best_epoch, checkpoint_meta=meta)
        if meta is None:
            return
        save_checkpoint(self.out / LAST_FILE, self.ema.module, meta)
        if improved:
            save_checkpoint(self.out / BEST_FILE, self.ema.module, meta)

    def _catch_up_checkpoints(self, state: TrainState) -> None:
        """Rewrite ``last``/``best`` from the state's EMA weights when the epoch it records
        was killed before writing them (the checkpoint on disk is older, or missing)."""
        if state.checkpoint_meta is None:
            return
        done = state.epoch + 1
        for name in (LAST_FILE, BEST_FILE) if state.best_epoch == done else (LAST_FILE,):
            path = self.out / name
            if checkpoint_epoch(path) != done:
                save_checkpoint(path, self.ema.module, state.checkpoint_meta)
                self._say(f"note: {path} was older than {STATE_FILE} (the run stopped while writing epoch "
                          f"{done}): rewritten from it")

    def _remove_stale_temporaries(self) -> None:
        removed = remove_stale_temporaries(self.out)
        if removed:
            self._say(f"note: removed {len(removed)} temporary file(s) an interrupted write left in {self.out}: "
                      + ", ".join(p.name for p in removed))

    def _checkpoint_meta(self, epoch: int, val_metrics: dict[str, Any]) -> dict[str, Any]:
        cfg = self.cfg
        return {
            "epoch": epoch + 1,
            "data": str(Path(cfg.data).resolve().name),
            "train_split": cfg.train_split,
            "train_images": len(self.train_index.samples),
            "val_split": cfg.val_split,
            "val_metrics": {k: v for k, v in val_metrics.items() if k != "ap50_ci95"},
            "recipe": cfg.to_dict(),  # with augment and loss: enough to train the recipe again
            **self.anchor_info,
        }
