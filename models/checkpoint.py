"""Checkpoints: one safetensors file, weights plus the config and metadata in its header.

safetensors holds only raw tensors and a JSON header, so loading a checkpoint can never
run code from the file (unlike ``torch.load`` of a pickle). Writes go to a temporary file
in the same folder and are renamed into place, so a crash never leaves half a file under
the real name; a process killed mid-write leaves the temporary, which
:func:`remove_stale_temporaries` clears at the next start.

A file that is not safetensors but another model format (a PyTorch pickle, ONNX, a
TensorRT engine, Darknet weights) is named as such, with what to use it for instead.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import struct
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from models.config import ConfigError, YoloConfig
from models.version import code_version
from models.yolov3 import YOLOv3

FORMAT_KEY = "polypscope_format"
FORMAT_VERSION = "1"
CONFIG_KEY = "config"
META_KEY = "metadata"
#: What :func:`atomic_write_bytes` names its temporary for NAME: ``.NAME.`` plus mkstemp's
#: eight random characters plus ``.tmp``.
TEMP_PATTERN = re.compile(r"^\..+\.[a-z0-9_]{8}\.tmp$")
ZIP_MAGIC = b"PK\x03\x04"  # torch.save's default container since PyTorch 1.6
PICKLE_PROTO = b"\x80"  # pickle's PROTO opcode, then the protocol number (2-5)
_NEED = "a PolypScope .safetensors checkpoint is needed here"
_ONNX_FIELD_TAGS = {0x12, 0x1A, 0x22, 0x28, 0x32, 0x3A, 0x42}  # ModelProto fields 2-8 after ir_version


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be read or does not fit its model; names the file."""


@dataclass
class Checkpoint:
    """A loaded checkpoint: the rebuilt model, its config and the stored metadata."""

    path: Path
    model: YOLOv3
    config: YoloConfig
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def trained_input_size(self) -> int:
        """The input size it was trained at. A model shipped to run at another size
        (``ship --img``) records it; pruning, fine-tuning and the pruning study work there."""
        return int(self.metadata.get("trained_input_size", self.config.input_size))

    def model_at_trained_size(self) -> YOLOv3:
        """The model as it was trained (the same weights at :attr:`trained_input_size`)."""
        from models.yolov3 import with_input_size

        if self.trained_input_size == self.config.input_size:
            return self.model
        return with_input_size(self.model, self.trained_input_size)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` through a temporary file, fsync and rename."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; give the file the usual permissions
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def remove_stale_temporaries(folder: str | os.PathLike[str]) -> list[Path]:
    """Delete what killed :func:`atomic_write_bytes` calls left in ``folder`` (only files of
    its naming pattern) and return them. Call it where no other process is writing, e.g.
    when a run starts in the run folder it owns."""
    root = Path(folder)
    if not root.is_dir():
        return []
    stale = sorted(p for p in root.iterdir() if TEMP_PATTERN.match(p.name) and p.is_file())
    for p in stale:
        p.unlink(missing_ok=True)
    return stale


def save_checkpoint(
    path: str | os.PathLike[str],
    model: YOLOv3,
    metadata: Mapping[str, Any] | None = None,
    *,
    half: bool = False,
) -> Path:
    """Save ``model`` (weights and config) with JSON-serialisable ``metadata``.

    ``half=True`` stores floating-point tensors as fp16 (half the size, for shipped
    models); they are read back as fp32.
    """
    tensors = {}
    for name, tensor in model.state_dict().items():
        t = tensor.detach().cpu()
        if half and t.is_floating_point():
            t = t.half()
        tensors[name] = t.contiguous()
    meta = {"code_version": code_version(), **(metadata or {})}
    header = {
        FORMAT_KEY: FORMAT_VERSION,
        CONFIG_KEY: model.config.to_json(),
        META_KEY: json.dumps(meta, default=str),
    }
    return atomic_write_bytes(path, st_save(tensors, metadata=header))


def read_header(path: str | os.PathLike[str]) -> tuple[YoloConfig, dict[str, Any]]:
    """The config and metadata of a checkpoint, without reading its weights."""
    p = Path(path)
    raw = _read_bytes(p)
    header = _parse_header(p, raw)
    return _config_from_header(p, header), _metadata_from_header(p, header)


def load_checkpoint(path: str | os.PathLike[str], device: str | torch.device = "cpu") -> Checkpoint:
    """Rebuild the model a checkpoint describes and load its weights (in eval mode)."""
    p = Path(path)
    raw = _read_bytes(p)
    header = _parse_header(p, raw)
    config = _config_from_header(p, header)
    metadata = _metadata_from_header(p, header)
    try:
        tensors = st_load(raw)
    except (SafetensorError, Exception) as exc:  # safetensors raises several types
        raise CheckpointError(f"{p}: the weights cannot be read ({exc})") from None
    model = YOLOv3(config)
    load_state_strict(model, tensors, p)
    return Checkpoint(p, model.to(device).eval(), config, metadata)


def load_state_strict(model: torch.nn.Module, tensors: Mapping[str, torch.Tensor], source: Path) -> None:
    """Copy ``tensors`` into ``model``, explaining every missing, extra or misshaped tensor."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in tensors]
    unexpected = [k for k in tensors if k not in expected]
    problems = []
    if missing:
        problems.append(f"missing tensors {missing[:4]}{' ...' if len(missing) > 4 else ''}")
    if unexpected:
        problems.append(f"unexpected tensors {unexpected[:4]}{' ...' if len(unexpected) > 4 else ''}")
    misshaped = [
        f"layer {name} has shape {tuple(tensors[name].shape)} in the file but the config "
        f"builds {tuple(want.shape)}"
        for name, want in expected.items()
        if name in tensors and tuple(tensors[name].shape) != tuple(want.shape)
    ]
    problems.extend(misshaped[:3])
    if len(misshaped) > 3:
        problems.append(f"and {len(misshaped) - 3} more misshaped tensors")
    if problems:
        raise CheckpointError(f"{source}: weights do not match the model: " + "; ".join(problems))
    with torch.no_grad():
        for name, target in expected.items():
            target.copy_(tensors[name].to(target.dtype))


def network_digest(path: str | os.PathLike[str]) -> str:
    """SHA-256 of the network a checkpoint holds: its tensors (names, dtypes, shapes, bytes)
    and its architecture (the config: anchors, box decode, classes, widths), but not the
    input size it runs at nor the rest of its header metadata. Re-shipping a network (new
    metrics, an operating threshold, a run size) changes the file but not the network, and a
    study that prunes it must still see the same one."""
    p = Path(path)
    raw = _read_bytes(p)
    config = dataclasses.asdict(_config_from_header(p, _parse_header(p, raw)))
    config.pop("input_size", None)
    size = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8:8 + size])
    digest = hashlib.sha256(json.dumps(config, sort_keys=True).encode())
    for name in sorted(k for k in header if k != "__metadata__"):
        entry = header[name]
        start, end = (8 + size + int(o) for o in entry["data_offsets"])
        digest.update(json.dumps([name, entry["dtype"], entry["shape"]]).encode())
        digest.update(raw[start:end])
    return digest.hexdigest()


def _read_bytes(p: Path) -> bytes:
    if not p.exists():
        raise CheckpointError(f"{p}: no such checkpoint file")
    if p.is_dir():
        raise CheckpointError(f"{p}: is a folder, not a checkpoint file")
    return p.read_bytes()


def _parse_header(p: Path, raw: bytes) -> dict[str, str]:
    """Read the safetensors header by hand, so every failure gets a precise message."""
    if not _looks_like_safetensors(raw):
        kind = foreign_model_format(p, raw)
        if kind is not None:
            raise CheckpointError(f"{p}: {kind}")
    if len(raw) < 8:
        raise CheckpointError(f"{p}: file is {len(raw)} bytes, too short to be a safetensors checkpoint")
    size = int.from_bytes(raw[:8], "little")
    if size > len(raw) - 8:
        raise CheckpointError(
            f"{p}: header claims {size} bytes but the file has {len(raw) - 8} after the length "
            "field: the file is truncated or not a safetensors checkpoint"
        )
    try:
        header = json.loads(raw[8:8 + size])
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{p}: header is not valid JSON ({exc}): corrupt or not safetensors") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{p}: header is not a JSON object: corrupt file")
    end = max((int(v["data_offsets"][1]) for k, v in header.items()
               if k != "__metadata__" and isinstance(v, dict) and "data_offsets" in v), default=0)
    if 8 + size + end > len(raw):
        raise CheckpointError(
            f"{p}: truncated: tensors need {8 + size + end} bytes but the file has {len(raw)}"
        )
    meta = header.get("__metadata__") or {}
    if meta.get(FORMAT_KEY) is None:
        raise CheckpointError(
            f"{p}: a safetensors file without PolypScope metadata (no '{FORMAT_KEY}' in its "
            "header): not a PolypScope checkpoint"
        )
    if meta[FORMAT_KEY] != FORMAT_VERSION:
        raise CheckpointError(
            f"{p}: checkpoint format {meta[FORMAT_KEY]!r} is not supported (this code reads "
            f"{FORMAT_VERSION!r}); upgrade PolypScope"
        )
    return meta


def _looks_like_safetensors(raw: bytes) -> bool:
    """A plausible header length followed by the header's opening brace."""
    return len(raw) > 9 and int.from_bytes(raw[:8], "little") <= len(raw) - 8 and raw[8:9] == b"{"


def foreign_model_format(p: Path, raw: bytes) -> str | None:
    """What a non-safetensors file is, when it is a model format worth naming, and what to
    do with it instead; ``None`` for anything else. Sniffs the content first (a renamed
    file is still recognised), then the suffix."""
    suffix = p.suffix.lower()
    if raw.startswith(ZIP_MAGIC) or (raw[:1] == PICKLE_PROTO and raw[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05")):
        kind = ("a PyTorch pickle file (torch.save: pickled objects in a zip container)" if raw.startswith(ZIP_MAGIC)
                else "a pickle file (e.g. a legacy torch.save checkpoint)")
        return (f"{kind}; PolypScope reads .safetensors checkpoints only and never "
                "unpickles (unpickling runs code from the file): if you trust it, load it yourself and save "
                "the model with models.save_checkpoint, or train one with 'polypscope train'")
    if suffix == ".onnx" or _looks_like_onnx(raw):
        return ("an ONNX model (what 'polypscope export' writes; run it with 'detect --model' or "
                f"'bench --model'); {_NEED}")
    if suffix in (".engine", ".plan", ".trt"):
        return f"a TensorRT engine (run it with 'detect --model'); {_NEED}, e.g. the one it was built from"
    if suffix in (".weights", ".74") or _looks_like_darknet(raw):
        return f"Darknet weights (start a training run from them with 'polypscope train --pretrained {p}'); {_NEED}"
    return None


def _looks_like_onnx(raw: bytes) -> bool:
    """An ONNX ModelProto starts with field 1, ir_version (a small varint), then field 2-8."""
    return len(raw) > 2 and raw[0] == 0x08 and 0 < raw[1] < 32 and raw[2] in _ONNX_FIELD_TAGS


def _looks_like_darknet(raw: bytes) -> bool:
    """Darknet's header: int32 major 0, minor 1 or 2, a small revision, then the images seen."""
    if len(raw) < 20:
        return False
    major, minor, revision = struct.unpack("<3i", raw[:12])
    header = 20 if major * 10 + minor >= 2 else 16
    return major == 0 and minor in (1, 2) and 0 <= revision < 100 and (len(raw) - header) % 4 == 0


def _config_from_header(p: Path, meta: Mapping[str, str]) -> YoloConfig:
    if CONFIG_KEY not in meta:
        raise CheckpointError(f"{p}: header has no model config")
    try:
        return YoloConfig.from_json(meta[CONFIG_KEY])
    except (ConfigError, TypeError) as exc:
        raise CheckpointError(f"{p}: model config is invalid: {exc}") from None


def _metadata_from_header(p: Path, meta: Mapping[str, str]) -> dict[str, Any]:
    try:
        value = json.loads(meta.get(META_KEY, "{}"))
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{p}: metadata is not valid JSON ({exc})") from None
    return value if isinstance(value, dict) else {}
