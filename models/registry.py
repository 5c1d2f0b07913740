"""Named model variants: ``create(name, **overrides)`` is the one public way to build one."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from models.config import YoloConfig
from models.yolov3 import YOLOv3

_REGISTRY: dict[str, Callable[..., YoloConfig]] = {}


def register_model(name: str) -> Callable[[Callable[..., YoloConfig]], Callable[..., YoloConfig]]:
    """Register a function that returns the default config of a named variant."""

    def add(fn: Callable[..., YoloConfig]) -> Callable[..., YoloConfig]:
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} is registered twice")
        _REGISTRY[name] = fn
        return fn

    return add


def available_models() -> list[str]:
    return sorted(_REGISTRY)


def config_for(name: str, **overrides: Any) -> YoloConfig:
    """The config of variant ``name`` with ``overrides`` applied (see YoloConfig.replace)."""
    try:
        base = _REGISTRY[name]()
    except KeyError:
        raise KeyError(f"unknown model {name!r}; known models: {available_models()}") from None
    return base.replace(**overrides) if overrides else base


def create(name: str, **overrides: Any) -> YOLOv3:
    """Build variant ``name``, e.g. ``create("yolov3-spp", width=0.25, input_size=320)``."""
    return YOLOv3(config_for(name, **overrides))


def build(config: YoloConfig) -> YOLOv3:
    """Build the network a config describes (for configs read from checkpoints)."""
    return YOLOv3(config)


@register_model("yolov3")
def _yolov3() -> YoloConfig:
    """Darknet's yolov3.cfg: 75 convolutions, no SPP."""
    return YoloConfig(spp=False)


@register_model("yolov3-spp")
def _yolov3_spp() -> YoloConfig:
    """Darknet's yolov3-spp.cfg: YOLOv3 plus SPP in the stride-32 head (76 convolutions)."""
    return YoloConfig(spp=True)
