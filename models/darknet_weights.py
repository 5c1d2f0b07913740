"""Reading and writing Darknet's ``.weights`` format (yolov3.weights, darknet53.conv.74).

Layout: a header of three int32 (major, minor, revision) and the count of images seen
(int64 when ``major*10 + minor >= 2``, else int32), then for every convolution in layer
order: with BatchNorm, ``beta, gamma, running_mean, running_var`` (``n`` floats each),
without it the ``n`` biases; then the ``n*c*k*k`` weights. All float32, little-endian.
The official yolov3.weights is 20 + 4 * 62,001,757 = 248,007,048 bytes.

This is the transfer-learning path: a full yolov3.weights into a network with another
class count loads everything except the three output convolutions, and the backbone-only
darknet53.conv.74 loads the 52 backbone convolutions and leaves the head freshly
initialised.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from models.checkpoint import atomic_write_bytes
from models.layers import ConvUnit
from models.yolov3 import YOLOv3

HEADER_VERSION = (0, 2, 0)


class DarknetWeightsError(RuntimeError):
    """A .weights file that does not fit the network; names the file and the layer."""


@dataclass
class DarknetLoadReport:
    """What a load did: layers filled, layers skipped (and why), images seen."""

    loaded: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    seen: int = 0
    header: tuple[int, int, int] = HEADER_VERSION

    @property
    def partial(self) -> bool:
        return bool(self.skipped)


def _layer_floats(conv: ConvUnit, out_channels: int | None = None) -> list[tuple[str, int]]:
    """(tensor role, float count) of one layer in file order, for ``out_channels`` filters."""
    w = conv.conv.weight
    n = out_channels if out_channels is not None else w.shape[0]
    per_filter = w.shape[1] * w.shape[2] * w.shape[3]
    if conv.is_output:
        return [("bias", n), ("weight", n * per_filter)]
    return [("beta", n), ("gamma", n), ("mean", n), ("var", n), ("weight", n * per_filter)]


def darknet_float_count(model: YOLOv3) -> int:
    """How many float32 values a full .weights file for ``model`` holds."""
    return sum(count for conv in model.named_convs().values() for _, count in _layer_floats(conv))


def _targets(conv: ConvUnit) -> dict[str, torch.Tensor]:
    if conv.is_output:
        return {"bias": conv.conv.bias, "weight": conv.conv.weight}
    bn = conv.bn
    return {"beta": bn.bias, "gamma": bn.weight, "mean": bn.running_mean,
            "var": bn.running_var, "weight": conv.conv.weight}


def _read_header(path: Path, raw: bytes) -> tuple[tuple[int, int, int], int, int]:
    if len(raw) < 16:
        raise DarknetWeightsError(f"{path}: {len(raw)} bytes is too short for a Darknet header")
    major, minor, revision = struct.unpack_from("<3i", raw, 0)
    if major * 10 + minor >= 2 and major < 1000 and minor < 1000:
        (seen,) = struct.unpack_from("<q", raw, 12)
        offset = 20
    else:
        (seen,) = struct.unpack_from("<i", raw, 12)
        offset = 16
    return (major, minor, revision), seen, offset


def load_darknet_weights(
    model: YOLOv3, path: str | os.PathLike[str], *, file_num_classes: int | None = None
) -> DarknetLoadReport:
    """Fill ``model`` from a Darknet ``.weights`` file.

    ``file_num_classes`` is the class count the file was trained with (80 for the official
    yolov3.weights); it defaults to the model's own. Output layers whose class count
    differs are read past and left as initialised. A file that ends on a layer boundary
    (darknet53.conv.74) loads partially; one that ends inside a layer, or has bytes left
    over, is refused. Only unpruned width-1.0 networks match Darknet's shapes.
    """
    p = Path(path)
    if not p.is_file():
        raise DarknetWeightsError(f"{p}: no such .weights file")
    raw = p.read_bytes()
    header, seen, offset = _read_header(p, raw)
    if (len(raw) - offset) % 4:
        raise DarknetWeightsError(
            f"{p}: {len(raw) - offset} bytes after the header is not a whole number of float32"
        )
    values = np.frombuffer(raw, dtype="<f4", offset=offset)
    report = DarknetLoadReport(seen=seen, header=header)
    file_classes = file_num_classes or model.config.num_classes
    file_outputs = 3 * (5 + file_classes)
    pos = 0
    convs = list(model.named_convs().items())
    for index, (name, conv) in enumerate(convs):
        if pos == len(values):
            for rest, _ in convs[index:]:
                report.skipped[rest] = "not in the file (the file ends before it)"
            break
        n_file = file_outputs if conv.is_output else conv.conv.weight.shape[0]
        layout = _layer_floats(conv, n_file)
        need = sum(c for _, c in layout)
        if pos + need > len(values):
            raise DarknetWeightsError(
                f"{p}: truncated inside layer {index} ({name}): it needs {need} floats but "
                f"only {len(values) - pos} remain"
            )
        if n_file != conv.conv.weight.shape[0]:
            report.skipped[name] = (
                f"output layer for {file_classes} classes in the file, "
                f"{model.config.num_classes} in the model: left freshly initialised"
            )
            pos += need
            continue
        targets = _targets(conv)
        with torch.no_grad():
            for role, count in layout:
                chunk = torch.from_numpy(values[pos:pos + count].copy())
                targets[role].copy_(chunk.view_as(targets[role]))
                pos += count
        report.loaded.append(name)
    if pos != len(values):
        raise DarknetWeightsError(
            f"{p}: {len(values) - pos} floats left over after the last layer: the file was "
            "written for a different network (check SPP, width and class count)"
        )
    return report


def save_darknet_weights(model: YOLOv3, path: str | os.PathLike[str], *, seen: int = 0,
                         upto: int | None = None) -> Path:
    """Write ``model`` in Darknet's layout; ``upto`` keeps only the first ``upto``
    convolutions (``upto=52`` gives a darknet53.conv.74-style backbone file)."""
    parts = [struct.pack("<3iq", *HEADER_VERSION, seen)]
    for conv in list(model.named_convs().values())[:upto]:
        targets = _targets(conv)
        for role, _ in _layer_floats(conv):
            parts.append(targets[role].detach().cpu().float().numpy().astype("<f4").tobytes())
    return atomic_write_bytes(path, b"".join(parts))
