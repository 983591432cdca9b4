"""The machine's compute rates that a network's achieved FLOP/s is compared with (imported by
throughput.py and peers.py; not a script):
- the fp32 GEMM rate: one large torch.mm;
- the convolution rate on a network's own convolutions: every aten.convolution the network
  runs in one forward (its 3×3 convolutions and the Upsample's stride-2 4×4 transposed one,
  at the batch it runs them), recorded and replayed on channels-last fp32 inputs, forward
  alone or forward + backward (input and weight gradients).

FLOPs are counted directly as 2 per multiply-add, as torch.utils.flop_counter does: a
convolution's forward does B·H'·W'·(C_out·C_in/groups·kh·kw) multiply-adds over its output
H'×W', a transposed one the same per input pixel (ConvCall.flops); the backward does 2× the
forward (the input gradient and the weight gradient, each as many as the forward). A rate over
several convolutions is their total FLOPs over their total time (FLOP-weighted).
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode


def gemm_gflops(dtype: torch.dtype = torch.float32, n: int = 4096, repeats: int = 5) -> float:
    """The machine's GEMM rate: median over repeats of an n×n by n×n torch.mm."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    torch.mm(a, b)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, b)
        times.append(time.perf_counter() - start)
    return 2 * n**3 / statistics.median(times) / 1e9


def counted_flops(net: nn.Module, forward: Callable[[], torch.Tensor]) -> tuple[int, int]:
    """FLOPs of `forward()` (the network's output on one image) as FlopCounterMode counts them:
    (forward in eval mode, forward + backward in training mode), attention through SDPA's math
    backend so that its matrix products are seen; element-wise work is not counted."""
    with sdpa_kernel(SDPBackend.MATH):
        net.eval()
        with FlopCounterMode(display=False) as fc, torch.no_grad():
            forward()
        fwd = fc.get_total_flops()
        net.train()
        with FlopCounterMode(display=False) as fc:
            forward().square().mean().backward()
        train = fc.get_total_flops()
    net.zero_grad(set_to_none=True)
    return fwd, train


@dataclass(frozen=True)
class ConvCall:
    """One aten.convolution as a network called it: enough to replay it."""

    input: tuple[int, ...]  # (B, C_in, H, W)
    weight: tuple[int, ...]  # (C_out, C_in/groups, kh, kw); transposed: (C_in, C_out/groups, kh, kw)
    bias: bool
    stride: tuple[int, ...]
    padding: tuple[int, ...]
    dilation: tuple[int, ...]
    transposed: bool
    output_padding: tuple[int, ...]
    groups: int

    def output_shape(self) -> tuple[int, ...]:
        """(B, C_out, H', W') of the output (torch.nn.Conv2d's and ConvTranspose2d's formulas)."""
        c_out = self.weight[1] * self.groups if self.transposed else self.weight[0]
        size = zip(self.input[2:], self.weight[2:], self.stride, self.padding, self.dilation, self.output_padding)
        if self.transposed:
            return (self.input[0], c_out, *((i - 1) * s - 2 * p + d * (k - 1) + o + 1 for i, k, s, p, d, o in size))
        return (self.input[0], c_out, *((i + 2 * p - d * (k - 1) - 1) // s + 1 for i, k, s, p, d, _ in size))

    def flops(self) -> int:
        """Forward FLOPs, 2 per multiply-add: each output pixel (each input pixel if transposed)
        of each image takes C_out·C_in/groups·kh·kw of them."""
        pixels = self.input[2:] if self.transposed else self.output_shape()[2:]
        return 2 * self.input[0] * math.prod(pixels) * math.prod(self.weight)

    def run(self, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
        return torch.ops.aten.convolution(x, w, b, list(self.stride), list(self.padding), list(self.dilation),
                                          self.transposed, list(self.output_padding), self.groups)


class _RecordConvolutions(TorchDispatchMode):
    """Notes every aten.convolution run under it (the level FlopCounterMode counts at)."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[ConvCall] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func is torch.ops.aten.convolution.default:
            x, w, b, stride, padding, dilation, transposed, output_padding, groups = args
            self.calls.append(ConvCall(tuple(x.shape), tuple(w.shape), b is not None, tuple(stride), tuple(padding),
                                       tuple(dilation), bool(transposed), tuple(output_padding), int(groups)))
        return func(*args, **(kwargs or {}))


@torch.no_grad()
def record_convolutions(forward: Callable[[], object]) -> list[ConvCall]:
    """The convolutions that one call of `forward` runs, in order (repeats included)."""
    with _RecordConvolutions() as recorder:
        forward()
    return recorder.calls


def conv_gflops(calls: list[ConvCall], backward: bool, repeats: int = 5) -> list[float]:
    """The machine's GFLOP/s on `calls`, one figure per repeat: total FLOPs over total time of
    the calls run in order on channels-last fp32 tensors, forward alone or, with `backward`,
    forward + backward (input, weight and bias gradients; counted as 3× the forward)."""
    tensors = {}
    for c in set(calls):
        x = torch.randn(c.input).contiguous(memory_format=torch.channels_last).requires_grad_(backward)
        w = torch.randn(c.weight).requires_grad_(backward)  # contiguous, as the network keeps its weights
        b = torch.randn(c.output_shape()[1]).requires_grad_(backward) if c.bias else None
        g = torch.randn(c.output_shape()).contiguous(memory_format=torch.channels_last) if backward else None
        tensors[c] = (x, w, b, g)

    def one_pass() -> None:
        for c in calls:
            x, w, b, g = tensors[c]
            if backward:
                torch.autograd.grad(c.run(x, w, b), [t for t in (x, w, b) if t is not None], g)
            else:
                with torch.no_grad():
                    c.run(x, w, b)

    flops = sum(c.flops() for c in calls) * (3 if backward else 1)
    one_pass()  # warm-up: oneDNN picks and caches its kernels
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        one_pass()
        rates.append(flops / (time.perf_counter() - start) / 1e9)
    return rates
