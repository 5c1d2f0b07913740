"""TensorRT engine files and their JSON sidecars (no TensorRT needed to read or check them).

A serialized engine only runs on the GPU model and TensorRT version that built it, and
silently goes stale when its ONNX changes. So every ``model.engine`` has a
``model.engine.json`` beside it recording TensorRT version, GPU name and compute
capability, precision, input shape, the ONNX file's sha256, the engine's own sha256 and
the model info; loading checks all of it first and says how to rebuild when something
differs. An engine built elsewhere (``trtexec``, Polygraphy) has no sidecar: ``detect
--no-sidecar`` loads it anyway, with a warning that nothing was checked.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from engine.model_info import ModelInfo, sha256_file

SIDECAR_SUFFIX = ".json"


class EngineMismatch(RuntimeError):
    """The engine was built for another GPU, TensorRT version or ONNX file."""


@dataclass(frozen=True)
class EngineSidecar:
    tensorrt_version: str
    gpu_name: str
    compute_capability: str  # "8.6"
    precision: str           # fp32 | fp16 | int8
    input_name: str
    input_shape: list[int]   # the optimisation profile's opt shape
    max_batch: int
    onnx_path: str
    onnx_sha256: str
    model_info: dict[str, str]  # ModelInfo.to_metadata() of the ONNX
    engine_sha256: str = ""     # of the engine file: the pair belongs together
    built_from: str = ""        # the typed ONNX the network was parsed from (fp16 / Q/DQ copy)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_json(cls, text: str, source: Path) -> EngineSidecar:
        try:
            data = json.loads(text)
            return cls(**data)
        except (json.JSONDecodeError, TypeError) as exc:
            raise EngineMismatch(f"{source}: engine sidecar is unreadable ({exc})") from None

    def info(self, source: Path) -> ModelInfo:
        return ModelInfo.from_metadata(self.model_info, source)


def sidecar_path(engine_path: str | Path) -> Path:
    p = Path(engine_path)
    return p.with_name(p.name + SIDECAR_SUFFIX)


def read_sidecar(engine_path: str | Path) -> EngineSidecar:
    side = sidecar_path(engine_path)
    if not side.is_file():
        raise EngineMismatch(
            f"{engine_path}: no sidecar {side.name} beside the engine, so its GPU, TensorRT version "
            "and ONNX source are unknown; rebuild it with 'polypscope build-engine --onnx MODEL.onnx'"
        )
    return EngineSidecar.from_json(side.read_text(), side)


def check_pair(engine_path: str | Path, sidecar: EngineSidecar) -> None:
    """Raise :class:`EngineMismatch` unless the sidecar was written for exactly this engine
    file (a build stopped between the two writes, or an engine copied over another)."""
    if not sidecar.engine_sha256:
        raise EngineMismatch(f"{engine_path}: its sidecar records no engine checksum (written by an older "
                             f"PolypScope), so it cannot be tied to this engine; {rebuild_hint(sidecar)}")
    if sha256_file(Path(engine_path)) != sidecar.engine_sha256:
        raise EngineMismatch(f"{engine_path}: the engine is not the one its sidecar describes (an interrupted "
                             f"build or a replaced file); {rebuild_hint(sidecar)}")


def rebuild_hint(sidecar: EngineSidecar) -> str:
    return (f"rebuild it on this machine: polypscope build-engine --onnx {sidecar.onnx_path} "
            f"--precision {sidecar.precision}")


def check_compatible(engine_path: str | Path, sidecar: EngineSidecar, *, tensorrt_version: str,
                     gpu_name: str, compute_capability: str, check_onnx: bool = True) -> None:
    """Raise :class:`EngineMismatch` naming every difference and the rebuild command."""
    problems = []
    if sidecar.tensorrt_version != tensorrt_version:
        problems.append(f"built with TensorRT {sidecar.tensorrt_version}, this is TensorRT {tensorrt_version}")
    if sidecar.compute_capability != compute_capability or sidecar.gpu_name != gpu_name:
        problems.append(f"built for {sidecar.gpu_name} (compute {sidecar.compute_capability}), "
                        f"this GPU is {gpu_name} (compute {compute_capability})")
    onnx = Path(sidecar.onnx_path)
    if check_onnx and onnx.is_file() and sha256_file(onnx) != sidecar.onnx_sha256:
        problems.append(f"its ONNX source {onnx} has changed since the engine was built")
    if problems:
        raise EngineMismatch(f"{engine_path}: " + "; ".join(problems) + "; " + rebuild_hint(sidecar))


def write_sidecar(engine_path: str | Path, sidecar: EngineSidecar) -> Path:
    from engine.atomic import atomic_write_text

    return atomic_write_text(sidecar_path(engine_path), sidecar.to_json())
