"""Mixed precision: which autocast dtype `--precision` means on a device, and the wrapper
that runs a network under it while everything after the network stays in float32."""

from __future__ import annotations

import torch
from torch import nn

from .errors import UserError


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of --precision on `device` (None for fp32), or a UserError
    where that precision cannot run."""
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
