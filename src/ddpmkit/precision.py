"""Mixed precision: which autocast dtype `--precision` means on a device, and the wrapper
that runs a network under it while everything after the network stays in float32.

`--precision auto` (the digits default) is bf16 where the hardware computes in bf16 natively
(CUDA with bf16 support; x86 CPUs whose /proc/cpuinfo flags include avx512_bf16 or amx_bf16,
e.g. Zen 4, Sapphire Rapids) and fp32 everywhere else: oneDNN also runs bf16 on older AVX-512
CPUs by conversion, but slower than fp32 there."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import torch
from torch import nn

from .errors import UserError


NATIVE_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})  # CPU flags of bf16 arithmetic in hardware


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> frozenset[str]:
    """The CPU's feature flags from /proc/cpuinfo (empty where there is no such file)."""
    try:
        for line in cpuinfo.read_text().splitlines():
            if line.startswith(("flags", "Features")):
                return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def cpu_has_native_bf16(flags: Iterable[str] | None = None) -> bool:
    """Whether this CPU does bf16 arithmetic in hardware and oneDNN can use it; `flags`
    replaces the CPU's own (for tests)."""
    flags = cpu_flags() if flags is None else frozenset(flags)
    return bool(flags & NATIVE_BF16_FLAGS) and torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()


def resolve(precision: str, device: torch.device, flags: Iterable[str] | None = None) -> str:
    """--precision as it runs on `device`: "auto" becomes bf16 where the device computes in
    bf16 natively (see the module docstring) and fp32 elsewhere; the others stay as given."""
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    if device.type == "cpu" and cpu_has_native_bf16(flags):
        return "bf16"
    return "fp32"


def autocast_dtype(precision: str, device: torch.device, flags: Iterable[str] | None = None) -> torch.dtype | None:
    """The autocast dtype of --precision on `device` (None for fp32), or a UserError
    where that precision cannot run; `flags` replaces the CPU's own for "auto" (tests)."""
    precision = resolve(precision, device, flags)
    if precision == "fp32":
        return None
    if device.type not in ("cuda", "cpu"):
        raise UserError(f"--precision {precision} runs on CUDA or the CPU, not on {device.type}; use --precision fp32")
    if precision == "fp16":
        if device.type != "cuda":
            raise UserError("--precision fp16 (with loss scaling) needs CUDA; on the CPU use --precision bf16 or fp32")
        return torch.float16
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise UserError("this GPU has no bf16 support (it needs compute capability 8.0 or newer); use --precision fp16 or fp32")
    if device.type == "cpu" and not (torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()):
        raise UserError("this CPU lacks the AVX-512 (bf16) instructions oneDNN needs for --precision bf16; use --precision fp32")
    return torch.bfloat16


class Autocast(nn.Module):
    """Runs `net` under autocast to `dtype` and returns float32, so that the loss, the
    EMA and everything after the network stay in fp32 (parameters are fp32 throughout)."""

    def __init__(self, net: nn.Module, device_type: str, dtype: torch.dtype):
        super().__init__()
        self.net, self.device_type, self.dtype = net, device_type, dtype

    def forward(self, *args: torch.Tensor) -> torch.Tensor:
        with torch.autocast(self.device_type, dtype=self.dtype):
            return self.net(*args).float()
