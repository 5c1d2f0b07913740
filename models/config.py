"""The one configuration object that rebuilds a YOLOv3, pruned or not, from JSON alone."""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from models.layout import ANCHORS_PER_SCALE, HEAD_STRIDES, prunable_layout

#: Darknet's COCO anchors for 416 px input, (w, h) in pixels, smallest first.
COCO_ANCHORS: tuple[tuple[float, float], ...] = (
    (10, 13), (16, 30), (33, 23),
    (30, 61), (62, 45), (59, 119),
    (116, 90), (156, 198), (373, 326),
)
#: Widths are rounded to multiples of this, which keeps CPU and GPU kernels efficient.
CHANNEL_DIVISOR = 8
MAX_STRIDE = max(HEAD_STRIDES)
MIN_INPUT_SIZE = 2 * MAX_STRIDE


class ConfigError(ValueError):
    """A model configuration that cannot describe a working network."""


def scaled_channels(full: int, width: float, divisor: int = CHANNEL_DIVISOR) -> int:
    """Width-multiplied channel count, rounded to ``divisor`` and never below it."""
    return max(divisor, int(math.floor(full * width / divisor + 0.5)) * divisor)


def default_channels(width: float, spp: bool) -> dict[str, int]:
    """Per-convolution output widths of an unpruned network at multiplier ``width``."""
    return {
        spec.name: scaled_channels(spec.full_channels, width)  # type: ignore[arg-type]
        for spec in prunable_layout(spp)
    }


@dataclass(frozen=True)
class YoloConfig:
    """Everything needed to rebuild a YOLOv3 network, including a physically pruned one.

    ``channels`` maps every prunable convolution (see :mod:`models.layout`) to its output
    width. Left empty, it is filled from ``width``; a pruned network stores its own
    arbitrary widths there and ``width`` only records the multiplier it started from.
    ``anchors`` are nine (w, h) pairs in input pixels, smallest first: three per scale,
    stride 8 first. Frozen so a model's config cannot drift from its weights.
    """

    num_classes: int = 1
    class_names: tuple[str, ...] = ("polyp",)
    input_size: int = 416
    anchors: tuple[tuple[float, float], ...] = COCO_ANCHORS
    spp: bool = False
    #: Darknet's ``[yolo] new_coords=1`` box decode (Scaled-YOLOv4, YOLOv5): centre
    #: ``2*sigmoid(t) - 0.5`` cells, size ``anchor * (2*sigmoid(t))**2``. It reaches the
    #: neighbouring cells and bounds sizes at 4x the anchor, which lets training assign
    #: each box to three cells and converges much faster from scratch. ``False`` is the
    #: original YOLOv3 decode that ``yolov3.weights`` expects.
    new_coords: bool = False
    width: float = 1.0
    channels: Mapping[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "class_names", tuple(str(n) for n in self.class_names))
        object.__setattr__(
            self, "anchors", tuple((float(w), float(h)) for w, h in self.anchors)
        )
        if not self.channels:
            object.__setattr__(self, "channels", default_channels(self.width, self.spp))
        else:
            object.__setattr__(self, "channels", {k: int(v) for k, v in self.channels.items()})
        self._validate()

    # -- validation -------------------------------------------------------------------
    def _validate(self) -> None:
        if self.num_classes < 1:
            raise ConfigError(f"num_classes must be at least 1, got {self.num_classes}")
        if len(self.class_names) != self.num_classes:
            raise ConfigError(
                f"{len(self.class_names)} class names given for {self.num_classes} classes"
            )
        check_input_size(self.input_size)
        if len(self.anchors) != ANCHORS_PER_SCALE * len(HEAD_STRIDES):
            raise ConfigError(f"expected 9 anchors (3 per scale), got {len(self.anchors)}")
        if any(w <= 0 or h <= 0 for w, h in self.anchors):
            raise ConfigError(f"anchors must be positive, got {self.anchors}")
        if not 0 < self.width <= 4:
            raise ConfigError(f"width multiplier must be in (0, 4], got {self.width}")
        self._validate_channels()

    def _validate_channels(self) -> None:
        layout = prunable_layout(self.spp)
        expected = {spec.name for spec in layout}
        missing = sorted(expected - set(self.channels))
        unknown = sorted(set(self.channels) - expected)
        if missing or unknown:
            raise ConfigError(
                f"channels do not match the {'YOLOv3-SPP' if self.spp else 'YOLOv3'} layout: "
                f"missing {missing[:5]}{'...' if len(missing) > 5 else ''}, "
                f"unknown {unknown[:5]}{'...' if len(unknown) > 5 else ''}"
            )
        bad = {k: v for k, v in self.channels.items() if v < 1}
        if bad:
            raise ConfigError(f"channel counts must be positive: {bad}")
        group_width: dict[str, tuple[str, int]] = {}
        for spec in layout:
            if spec.group is None:
                continue
            width = self.channels[spec.name]
            first = group_width.setdefault(spec.group, (spec.name, width))
            if first[1] != width:
                raise ConfigError(
                    f"{spec.name} has {width} channels but {first[0]} has {first[1]}: "
                    f"they are joined by residual additions (group {spec.group}) "
                    "and must have the same width"
                )

    # -- derived values ---------------------------------------------------------------
    @property
    def outputs_per_anchor(self) -> int:
        """Box (4) + objectness (1) + one score per class."""
        return 5 + self.num_classes

    @property
    def anchors_by_stride(self) -> dict[int, tuple[tuple[float, float], ...]]:
        """The three anchors each output stride predicts, e.g. ``{8: (...), 16: ..., 32: ...}``."""
        strides = sorted(HEAD_STRIDES)
        return {
            s: self.anchors[i * ANCHORS_PER_SCALE:(i + 1) * ANCHORS_PER_SCALE]
            for i, s in enumerate(strides)
        }

    @property
    def is_pruned(self) -> bool:
        return dict(self.channels) != default_channels(self.width, self.spp)

    # -- serialisation ----------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "num_classes": self.num_classes,
            "class_names": list(self.class_names),
            "input_size": self.input_size,
            "anchors": [list(a) for a in self.anchors],
            "spp": self.spp,
            "new_coords": self.new_coords,
            "width": self.width,
            "channels": dict(self.channels),
        }

    def to_json(self, indent: int | None = None) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> YoloConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown config fields {unknown}; known: {sorted(known)}")
        values = dict(data)
        if "anchors" in values:
            values["anchors"] = tuple(tuple(a) for a in values["anchors"])
        return cls(**values)

    @classmethod
    def from_json(cls, text: str) -> YoloConfig:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"config is not valid JSON: {exc}") from exc
        if not isinstance(data, dict):
            raise ConfigError("config JSON must be an object")
        return cls.from_dict(data)

    def replace(self, **overrides: Any) -> YoloConfig:
        """A copy with ``overrides``; a new ``width`` or ``spp`` re-derives the widths
        unless ``channels`` is given too."""
        if ("width" in overrides or "spp" in overrides) and "channels" not in overrides:
            overrides["channels"] = {}
        if "num_classes" in overrides and "class_names" not in overrides:
            n = overrides["num_classes"]
            overrides["class_names"] = tuple(
                self.class_names[:n] + tuple(f"class{i}" for i in range(len(self.class_names), n))
            )
        return dataclasses.replace(self, **overrides)


def check_input_size(size: int) -> int:
    """Reject input sizes the three strides cannot tile, with the nearest valid sizes."""
    if not isinstance(size, int) or size < MIN_INPUT_SIZE or size % MAX_STRIDE:
        lower = max(MIN_INPUT_SIZE, (int(size) // MAX_STRIDE) * MAX_STRIDE)
        raise ConfigError(
            f"input size {size} is not usable: it must be a multiple of {MAX_STRIDE} "
            f"(the largest stride) and at least {MIN_INPUT_SIZE}; "
            f"try {lower} or {lower + MAX_STRIDE}"
        )
    return size


def scale_anchors(
    anchors: Sequence[Sequence[float]], from_size: int, to_size: int
) -> tuple[tuple[float, float], ...]:
    """Anchors for another input size (they are in input pixels)."""
    s = to_size / from_size
    return tuple((w * s, h * s) for w, h in anchors)
