"""Extract the Python API names of a TensorRT bindings wheel into a vendored name list.

    pip download --no-deps tensorrt-cu12-bindings==10.13.3.9 tensorrt-cu13-bindings==11.4.0.106 -d wheels/
    python -m engine.trt_engine.extract_api wheels/*.whl

``import tensorrt`` fails on our machines (the libraries wheel has no binary on the package
registry), but the bindings wheel holds the compiled module ``tensorrt.so``, and pybind11
keeps every class, method, attribute and enum-member name it registers as a NUL-terminated
string in it. This script reads those strings (and the top-level names of the wheel's
``__init__.py``) without loading the module, and writes ``api_names/tensorrt-<version>.txt``.

Two traps, both handled: the linker merges a string into the tail of a longer one
(``INT8`` is stored only as the end of ``UINT8``), so a name counts as present when it
ends some string (see :func:`engine.trt_engine.api_surface.has_name`); and an absence
proves nothing unless the extraction works, so it refuses to write a list that lacks any
of :data:`KNOWN_IN_EVERY_VERSION`.
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import re
import zipfile
from pathlib import Path

from engine.trt_engine.api_surface import API_DIR, has_name

# Names every TensorRT 10/11 Python API has (from NVIDIA's API reference); their absence
# means the extraction is broken, not that the API lost them.
KNOWN_IN_EVERY_VERSION = ("Builder", "Logger", "Runtime", "OnnxParser", "BuilderFlag", "DataType",
                          "create_network", "create_builder_config", "build_serialized_network",
                          "deserialize_cuda_engine", "execute_async_v3", "set_tensor_address",
                          "set_input_shape", "get_tensor_shape", "set_memory_pool_limit", "WORKSPACE",
                          "STRONGLY_TYPED", "HALF", "FLOAT", "INT8", "__version__")
_IDENTIFIER = re.compile(rb"(?<=\x00)([A-Za-z_][A-Za-z0-9_]{1,59})\x00")  # whole strings only
_MANGLED = ("_Z", "ZN", "ZZ", "ZTS", "ZTV", "ZTI")


def names_in_library(data: bytes) -> set[str]:
    """Whole identifier-like strings of a compiled module (NUL before and after; at most 60
    characters), C++ mangled names dropped."""
    return {name for name in (m.group(1).decode() for m in _IDENTIFIER.finditer(data)) if not name.startswith(_MANGLED)}


def names_in_python(source: str) -> set[str]:
    """Top-level names a Python module defines (functions, classes, assignments, imports)."""
    names: set[str] = set()
    for node in ast.parse(source).body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef)):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update((a.asname or a.name).split(".")[0] for a in node.names if a.name != "*")
    return names


def wheel_version(wheel: Path) -> str:
    parts = wheel.name.split("-")
    if len(parts) < 3:
        raise ValueError(f"{wheel}: not a wheel file name (name-version-...whl)")
    return parts[1]


def extract(wheel: Path) -> tuple[str, set[str]]:
    """(TensorRT version, API names) of a bindings wheel."""
    with zipfile.ZipFile(wheel) as zf:
        members = zf.namelist()
        libraries = [m for m in members if re.search(r"/tensorrt[^/]*\.so$", m)]
        if not libraries:
            raise ValueError(f"{wheel}: no tensorrt*.so inside; is this a tensorrt-*-bindings wheel?")
        names: set[str] = set()
        for member in libraries:
            names |= names_in_library(zf.read(member))
        for member in (m for m in members if m.endswith("__init__.py") and m.count("/") == 1):
            names |= names_in_python(zf.read(member).decode())
    version = wheel_version(wheel)
    missing = [n for n in KNOWN_IN_EVERY_VERSION if not has_name(names, n)]
    if missing:
        raise ValueError(f"{wheel}: extraction found none of {missing}, which every TensorRT 10/11 has: "
                         "the list would be wrong, so none is written")
    return version, names


def write_list(wheel: Path, out_dir: Path = API_DIR) -> Path:
    version, names = extract(wheel)
    digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"tensorrt-{version}.txt"
    header = f"# TensorRT {version} Python API names, extracted from {wheel.name} (sha256 {digest})\n"
    path.write_text(header + "\n".join(sorted(names)) + "\n")
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m engine.trt_engine.extract_api", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("wheels", nargs="+", type=Path, help="tensorrt-cu1X-bindings-*.whl files")
    parser.add_argument("--out", type=Path, default=API_DIR, help=f"output folder (default {API_DIR})")
    args = parser.parse_args(argv)
    for wheel in args.wheels:
        print(f"wrote {write_list(wheel, args.out)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
