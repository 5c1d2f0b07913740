"""PolypScope's detector: YOLOv3 (Darknet-53, three-scale head, optional SPP).

Imports torch; nothing here imports ``training``, ``engine`` or ``app``.
"""

from models.checkpoint import (
    Checkpoint,
    CheckpointError,
    load_checkpoint,
    read_header,
    save_checkpoint,
)
from models.config import ConfigError, YoloConfig, check_input_size
from models.registry import available_models, build, config_for, create, register_model
from models.yolov3 import YOLOv3, with_input_size

__all__ = [
    "with_input_size",
    "Checkpoint",
    "CheckpointError",
    "ConfigError",
    "YOLOv3",
    "YoloConfig",
    "available_models",
    "build",
    "check_input_size",
    "config_for",
    "create",
    "load_checkpoint",
    "read_header",
    "register_model",
    "save_checkpoint",
]
