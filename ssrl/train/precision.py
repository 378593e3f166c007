"""Numeric precision of the training steps: fp32, or bf16 autocast where the hardware runs it natively.

`auto` means bf16 on CUDA devices that support it and on CPUs with native bf16 instructions
(AVX512-BF16 or AMX), fp32 elsewhere: on an AVX2-only CPU bf16 is emulated and slower than fp32.
What stays fp32 whatever the setting: the online probe, frozen-track embeddings, losses after the
model (logits are cast up) and every metric.
"""

from __future__ import annotations

import contextlib
import functools
from pathlib import Path

import torch

from ssrl.config import PRECISIONS

_CPU_FLAGS = ("avx512_bf16", "amx_bf16")  # /proc/cpuinfo names of native bf16 compute


@functools.cache
def cpu_native_bf16() -> bool:
    """True when this CPU computes bf16 natively (AVX512-BF16 or AMX), asked of torch once."""
    probes = [getattr(torch.cpu, n, None) for n in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    probes = [p for p in probes if callable(p)]
    if probes:
        return any(bool(p()) for p in probes)
    try:  # an older torch without the probes: the kernel's view of the CPU flags
        flags = Path("/proc/cpuinfo").read_text().split()
    except OSError:
        return False
    return any(f in flags for f in _CPU_FLAGS)


def resolve_precision(name: str, device: torch.device) -> str:
    """'fp32' or 'bf16': the precision a run with setting `name` trains at on `device`."""
    if name not in PRECISIONS:
        raise ValueError(f"precision {name!r} is unknown; use one of {', '.join(PRECISIONS)}")
    if name != "auto":
        return name
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    return "bf16" if device.type == "cpu" and cpu_native_bf16() else "fp32"


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """bf16 autocast on the device when precision is 'bf16' (resolved); nothing for 'fp32'."""
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    if precision != "fp32":
        raise ValueError(f"autocast needs a resolved precision (fp32 or bf16), not {precision!r}")
    return contextlib.nullcontext()
