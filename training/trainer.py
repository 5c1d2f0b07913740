"""The training loop: seeded, resumable, EMA-averaged, with per-epoch logs and plots.

A run folder holds ``last.safetensors`` and ``best.safetensors`` (EMA weights, loadable
like any checkpoint), ``state.safetensors`` (raw weights, EMA and optimiser state for
``--resume``), ``results.csv``/``results.jsonl`` and PNG plots. All writes are atomic,
so a crash or Ctrl-C loses at most the epoch in progress.

Multi-GPU: start with ``torchrun --nproc_per_node N -m app train ...``; the loop picks up
the process group from the environment (NCCL on CUDA, gloo on CPU) and only rank 0
evaluates and writes.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, DistributedSampler, Sampler

from models import YoloConfig, YOLOv3, config_for, load_checkpoint, save_checkpoint
from models.checkpoint import atomic_write_bytes
from models.darknet_weights import load_darknet_weights
from training.anchors import box_sizes_at, kmeans_anchors
from training.augment import AugmentConfig
from training.datasets import DatasetIndex, open_dataset
from training.distill import DistillationLoss
from training.ema import ModelEMA
from training.evaluate import evaluate_model
from training.loader import ImageCache, TrainDataset, collate
from training.loss import LossConfig, YoloLoss
from training.progress import progress
from training.run_log import RunLog
from training.train_state import load_train_state, save_train_state

FITNESS_KEY = "ap50"


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


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
    ema_decay: float = 0.9999
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
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    loss: LossConfig = field(default_factory=LossConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        d = dict(d)
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


class EpochSampler(Sampler[int]):
    """Shuffles with a generator seeded by (seed, epoch): resumed runs see the same order."""

    def __init__(self, n: int, seed: int) -> None:
        self.n, self.seed, self.epoch = n, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.n

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed * 100003 + self.epoch)
        return iter(torch.randperm(self.n, generator=g).tolist())


def lr_at(step: int, total: int, warmup: int, base: float, final_fraction: float) -> float:
    """Linear warm-up to ``base``, then cosine decay to ``base * final_fraction``."""
    if step < warmup:
        return base * (step + 1) / warmup
    progress_ = (step - warmup) / max(1, total - warmup)
    return base * (final_fraction + (1 - final_fraction) * 0.5 * (1 + math.cos(math.pi * progress_)))


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


def fit_anchor_config(model_config: YoloConfig, train: DatasetIndex, size: int, seed: int) -> tuple[YoloConfig, dict[str, float]]:
    fit = kmeans_anchors(box_sizes_at(train.samples, size), k=9, seed=seed)
    anchors = tuple((round(float(w), 2), round(float(h), 2)) for w, h in fit.anchors)
    return model_config.replace(anchors=anchors), {"anchor_mean_iou": fit.mean_best_iou,
                                                   "anchor_bpr": fit.best_possible_recall}


class Trainer:
    """Owns one training run; ``run()`` trains to the last epoch (or resumes there)."""

    def __init__(self, cfg: TrainConfig, *, resume: bool = False, show_progress: bool = True) -> None:
        self.cfg = cfg
        self.out = Path(cfg.out)
        self.show_progress = show_progress
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        self.device = pick_device(cfg.device, int(os.environ.get("LOCAL_RANK", "0")))
        self.dist = init_distributed(self.device)
        self.resume = resume

    # -- set-up ---------------------------------------------------------------------
    def _prepare(self) -> None:
        cfg = self.cfg
        torch.manual_seed(cfg.seed)
        np.random.seed(cfg.seed)
        train = open_dataset(cfg.data, cfg.train_split)
        val = open_dataset(cfg.data, cfg.val_split)
        if not train.samples:
            raise RuntimeError(f"{cfg.data}: split {cfg.train_split!r} has no usable samples")
        self.train_index, self.val_index = train, val
        state = load_train_state(self.out) if self.resume else None
        if state is not None:
            model_config = state.model_config
            self.start_epoch = state.epoch + 1
            self.best_fitness = state.best_fitness
            anchor_info: dict[str, float] = {}
        elif cfg.init_weights:
            if self.resume:
                raise FileNotFoundError(f"{self.out}: nothing to resume (no state.safetensors)")
            init = load_checkpoint(cfg.init_weights)
            model_config, anchor_info = init.config, {}
            self.start_epoch, self.best_fitness = 0, -1.0
        else:
            if self.resume:
                raise FileNotFoundError(f"{self.out}: nothing to resume (no state.safetensors)")
            model_config = config_for(cfg.model, width=cfg.width, input_size=cfg.img, new_coords=cfg.new_coords,
                                      num_classes=len(train.class_names), class_names=train.class_names)
            anchor_info = {}
            if cfg.fit_anchors:
                model_config, anchor_info = fit_anchor_config(model_config, train, cfg.img, cfg.seed)
            self.start_epoch = 0
            self.best_fitness = -1.0
        self.anchor_info = anchor_info
        self.model = YOLOv3(model_config)
        if state is None and cfg.init_weights:
            self.model.load_state_dict(init.model.state_dict())
        if state is None and cfg.pretrained:
            report = load_darknet_weights(self.model, cfg.pretrained, file_num_classes=cfg.pretrained_classes)
            print(f"{cfg.pretrained}: loaded {len(report.loaded)} layers, "
                  f"{len(report.skipped)} left freshly initialised")
        self.model.to(self.device)
        self.optimizer = build_optimizer(self.model, cfg)
        self.ema = ModelEMA(self.model, cfg.ema_decay)
        if state is not None:
            state.apply(self.model, self.ema, self.optimizer)
        self.loss = YoloLoss(model_config, cfg.loss)
        self.teacher, self.distill = None, None
        if cfg.distill_from:
            self.teacher = load_checkpoint(cfg.distill_from).model.to(self.device).eval()
            for p in self.teacher.parameters():
                p.requires_grad_(False)
            self.distill = DistillationLoss(model_config, cfg.loss, cfg.distill_weight)
        self.train_cache = ImageCache(train.samples, cfg.img)
        self.val_cache = ImageCache(val.samples, cfg.img)
        self.dataset = TrainDataset(self.train_cache, cfg.img, cfg.augment, cfg.seed)
        if self.dist.world > 1:
            self.sampler: Any = DistributedSampler(self.dataset, self.dist.world, self.dist.rank,
                                                   shuffle=True, seed=cfg.seed, drop_last=True)
            per_rank = max(1, cfg.batch // self.dist.world)
            self.ddp = torch.nn.parallel.DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        else:
            self.sampler = EpochSampler(len(self.dataset), cfg.seed)
            per_rank = cfg.batch
            self.ddp = None
        self.loader = DataLoader(self.dataset, batch_size=per_rank, sampler=self.sampler, drop_last=True,
                                 num_workers=cfg.workers, collate_fn=collate,
                                 persistent_workers=False)
        self.steps_per_epoch = len(self.loader)
        self.total_steps = self.steps_per_epoch * cfg.epochs
        self.warmup_steps = max(100, int(cfg.warmup_epochs * self.steps_per_epoch))
        self.use_amp = self.device.type == "cuda"
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.use_amp)
        self.log = RunLog(self.out) if self.dist.is_main else None

    # -- the loop -------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        self._prepare()
        cfg = self.cfg
        if self.dist.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(self.out / "train_config.json", json.dumps(cfg.to_dict(), indent=2).encode())
        # Fill the image caches before the first epoch (and before any worker forks).
        self.train_cache.fill()
        self.val_cache.fill()
        metrics: dict[str, Any] = {}
        for epoch in range(self.start_epoch, cfg.epochs):
            started = time.time()
            losses = self._train_epoch(epoch)
            if self.dist.is_main:
                metrics = self._end_epoch(epoch, losses, time.time() - started)
        if self.dist.world > 1:
            dist.barrier()
        return metrics

    def _train_epoch(self, epoch: int) -> dict[str, float]:
        cfg = self.cfg
        self.sampler.set_epoch(epoch)
        self.dataset.epoch = epoch
        self.dataset.use_mosaic = epoch < cfg.epochs - cfg.close_mosaic
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
            with torch.autocast(self.device.type, enabled=self.use_amp):
                raw = net(images)
            loss, parts = self.loss([r.float() for r in raw], batch.targets)
            if self.teacher is not None:
                with torch.no_grad(), torch.autocast(self.device.type, enabled=self.use_amp):
                    teacher_raw = self.teacher.forward_raw(images)
                kd, parts["kd"] = self.distill([r.float() for r in raw], [t.float() for t in teacher_raw])
                loss = loss + kd
            if not torch.isfinite(loss):
                raise TrainingDiverged(
                    f"loss became {float(loss)} at epoch {epoch + 1}, step {i + 1} "
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
        last_epoch = epoch == cfg.epochs - 1
        if (epoch + 1) % cfg.eval_every == 0 or last_epoch:
            val_metrics, evaluator = evaluate_model(self.ema.module, self.val_cache, cfg.img,
                                                    self.model.config.class_names)
            row.update({f"val_{k}": v for k, v in val_metrics.items() if isinstance(v, float)})
            fitness = float(val_metrics[FITNESS_KEY])
            meta = self._checkpoint_meta(epoch, val_metrics)
            save_checkpoint(self.out / "last.safetensors", self.ema.module, meta)
            if fitness > self.best_fitness:
                self.best_fitness = fitness
                save_checkpoint(self.out / "best.safetensors", self.ema.module, meta)
                self.log.save_pr_curve(evaluator.image_results(), f"val PR curve (epoch {epoch + 1})")
        row["best_val_ap50"] = self.best_fitness
        save_train_state(self.out, epoch, self.best_fitness, self.model, self.ema, self.optimizer)
        self.log.append(row)
        self.log.plot()
        return row

    def _checkpoint_meta(self, epoch: int, val_metrics: dict[str, Any]) -> dict[str, Any]:
        cfg = self.cfg
        return {
            "epoch": epoch + 1,
            "data": str(Path(cfg.data).resolve().name),
            "train_split": cfg.train_split,
            "train_images": len(self.train_index.samples),
            "val_split": cfg.val_split,
            "val_metrics": {k: v for k, v in val_metrics.items() if k != "ap50_ci95"},
            "recipe": {k: v for k, v in cfg.to_dict().items() if k not in ("augment", "loss")},
            **self.anchor_info,
        }
