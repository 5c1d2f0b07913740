"""Resumable training state without pickle: raw weights, EMA weights and optimiser
moments as safetensors tensors, the rest (epoch, hyper-parameters) as JSON in the header.

The state is the first file an epoch writes, before ``last`` and ``best``. It also carries
the metadata those checkpoints get (``checkpoint_meta``) and the epoch of the best one, so
a run killed between the writes can rewrite them from the state's EMA weights on resume.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import load_file
from safetensors.torch import save as st_save

from models import YoloConfig
from models.checkpoint import atomic_write_bytes
from training.loop.ema import ModelEMA

STATE_FILE = "state.safetensors"


def save_train_state(out: Path, epoch: int, best_fitness: float, model: torch.nn.Module,
                     ema: ModelEMA, optimizer: torch.optim.Optimizer, *, best_epoch: int | None = None,
                     checkpoint_meta: dict[str, Any] | None = None) -> Path:
    """``epoch`` is the 0-based epoch just finished; ``best_epoch`` the 1-based epoch of the
    best checkpoint; ``checkpoint_meta`` what this epoch's checkpoints carry (None when
    it was not evaluated)."""
    tensors: dict[str, torch.Tensor] = {}
    for k, v in model.state_dict().items():
        tensors[f"model.{k}"] = v.detach().cpu().contiguous()
    for k, v in ema.module.state_dict().items():
        tensors[f"ema.{k}"] = v.detach().cpu().contiguous()
    opt = optimizer.state_dict()
    for idx, entry in opt["state"].items():
        for key, value in entry.items():
            tensors[f"opt.{idx}.{key}"] = torch.as_tensor(value).detach().cpu().contiguous()
    header = {
        "epoch": str(epoch),
        "best_fitness": repr(best_fitness),
        "ema_updates": str(ema.updates),
        "param_groups": json.dumps(opt["param_groups"]),
        "model_config": model.config.to_json(),
    }
    if best_epoch is not None:
        header["best_epoch"] = str(best_epoch)
    if checkpoint_meta is not None:
        header["checkpoint_meta"] = json.dumps(checkpoint_meta, default=str)
    return atomic_write_bytes(out / STATE_FILE, st_save(tensors, metadata=header))


@dataclass
class TrainState:
    epoch: int
    best_fitness: float
    ema_updates: int
    model_config: YoloConfig
    param_groups: list[dict[str, Any]]
    tensors: dict[str, torch.Tensor]
    best_epoch: int | None = None
    checkpoint_meta: dict[str, Any] | None = None

    def apply(self, model: torch.nn.Module, ema: ModelEMA, optimizer: torch.optim.Optimizer) -> None:
        model.load_state_dict({k[6:]: v for k, v in self.tensors.items() if k.startswith("model.")})
        ema.module.load_state_dict({k[4:]: v for k, v in self.tensors.items() if k.startswith("ema.")})
        ema.updates = self.ema_updates
        state: dict[int, dict[str, torch.Tensor]] = {}
        for k, v in self.tensors.items():
            if k.startswith("opt."):
                _, idx, key = k.split(".", 2)
                state.setdefault(int(idx), {})[key] = v
        optimizer.load_state_dict({"state": state, "param_groups": self.param_groups})


def load_train_state(out: Path) -> TrainState | None:
    path = out / STATE_FILE
    if not path.is_file():
        return None
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata()
        tensors = load_file(str(path))
    except Exception as exc:  # safetensors raises several error types
        raise RuntimeError(f"{path}: cannot read the training state ({exc})") from None
    return TrainState(
        epoch=int(meta["epoch"]),
        best_fitness=float(meta["best_fitness"]),
        ema_updates=int(meta["ema_updates"]),
        model_config=YoloConfig.from_json(meta["model_config"]),
        param_groups=json.loads(meta["param_groups"]),
        tensors=tensors,
        best_epoch=int(meta["best_epoch"]) if "best_epoch" in meta else None,
        checkpoint_meta=json.loads(meta["checkpoint_meta"]) if "checkpoint_meta" in meta else None,
    )
