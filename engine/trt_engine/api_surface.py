"""Which TensorRT Python API names each supported version has, from vendored name lists.

The lists in ``api_names/`` are extracted from NVIDIA's bindings wheels by
:mod:`engine.trt_engine.extract_api` (``import tensorrt`` cannot work on our machines, so
the wheels are read, not imported). The test stand-in for ``tensorrt`` refuses any name
its emulated version lacks, so the engine code is checked against the real API of 10.x and
11.x on every run of the suite.

TensorRT 11 removed implicit quantization and weak typing: ``BuilderFlag.FP16``,
``BuilderFlag.INT8``, the ``IInt8*Calibrator`` classes, ``int8_calibrator`` and
``set_calibration_profile`` are gone (NVIDIA, "TensorRT 10.x to 11.x Python API"
migration guide); networks are strongly typed and INT8 comes from Q/DQ nodes in the ONNX.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import cache
from pathlib import Path

API_DIR = Path(__file__).resolve().parent / "api_names"


def available_versions() -> list[str]:
    """The TensorRT versions with a vendored list, oldest first."""
    versions = [p.stem.removeprefix("tensorrt-") for p in API_DIR.glob("tensorrt-*.txt")]
    return sorted(versions, key=lambda v: tuple(int(x) if x.isdigit() else 0 for x in v.split(".")))


@cache
def api_names(version: str) -> frozenset[str]:
    path = API_DIR / f"tensorrt-{version}.txt"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no API list for TensorRT {version}; have {', '.join(available_versions())}")
    return frozenset(line.strip() for line in path.read_text().splitlines() if line.strip() and not line.startswith("#"))


def has_name(names: Iterable[str], name: str) -> bool:
    """Whether ``name`` is in the API: one of ``names``, or the tail of one (the linker
    stores a string that ends a longer one only once: ``INT8`` lives inside ``UINT8``)."""
    names = names if isinstance(names, (set, frozenset)) else set(names)
    return name in names or any(n.endswith(name) for n in names)


def major(version: str) -> int:
    return int(version.split(".")[0])
