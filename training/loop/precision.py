"""Which arithmetic a training run uses: mixed precision where the hardware has it.

On CUDA, float16 autocast with a gradient scaler (the usual mixed precision). On a CPU
with native bfloat16 (AVX-512 BF16 or AMX, as on recent AMD EPYC and Intel Xeon),
bfloat16 autocast: on this project's 2-core EPYC it doubles training throughput together
with channels-last memory (``docs/accuracy.md``), and bfloat16 keeps float32's exponent
range, so no loss scaling is needed. On a CPU without it, bfloat16 is emulated and
slower than float32, so ``auto`` stays in float32 there. The loss is always computed in
float32 and weights are kept in float32 (autocast casts per operation).
"""

from __future__ import annotations

from typing import Literal

import torch

Precision = Literal["auto", "fp32", "bf16", "fp16"]
CHOICES: tuple[str, ...] = ("auto", "fp32", "bf16", "fp16")


def cpu_has_native_bf16() -> bool:
    """True when oneDNN runs bfloat16 convolutions natively on this CPU."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def autocast_dtype(requested: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``requested`` on ``device``, or ``None`` for plain float32.

    ``auto`` means float16 on CUDA, bfloat16 on a CPU with native support, else float32.
    Asking for float16 on a CPU is refused (CPU autocast is a bfloat16 feature).
    """
    if requested not in CHOICES:
        raise ValueError(f"precision must be one of {', '.join(CHOICES)}, not {requested!r}")
    if requested == "fp32":
        return None
    if requested == "bf16":
        return torch.bfloat16
    if requested == "fp16":
        if device.type != "cuda":
            raise ValueError("precision fp16 needs a CUDA device; on a CPU use bf16 or fp32")
        return torch.float16
    if device.type == "cuda":
        return torch.float16
    return torch.bfloat16 if device.type == "cpu" and cpu_has_native_bf16() else None
