"""benchmarks/rates.py, the convolution rate that throughput.py compares the U-Net with: the
convolutions it records are all those the network runs, and its direct FLOP count (2 per
multiply-add) is torch's FlopCounterMode count, the transposed upsampling included."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from ddpmkit.nets.unet import UNet, UNetConfig

ROOT = Path(__file__).resolve().parents[1]


def rates(monkeypatch):
    """benchmarks/rates.py (benchmarks/ is not a package), registered while the test runs:
    the dataclass decorator looks its own module up."""
    spec = importlib.util.spec_from_file_location("rates", ROOT / "benchmarks" / "rates.py")
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "rates", module)
    spec.loader.exec_module(module)
    return module


def test_recorded_convolutions_are_the_networks_and_counted_as_flop_counter_counts_them(monkeypatch):
    r = rates(monkeypatch)
    net = UNet(UNetConfig(in_channels=3, out_channels=3, base_width=16, channel_mults=(1, 2), blocks_per_level=1, groups=8, image_size=16)).eval()
    x, t = torch.randn(3, 3, 16, 16), torch.tensor([0, 500, 999])
    calls = r.record_convolutions(lambda: net(x, t))
    with FlopCounterMode(display=False) as fc, torch.no_grad():
        net(x, t)
    assert sum(c.flops() for c in calls) == fc.get_flop_counts()["Global"][torch.ops.aten.convolution]

    stem = calls[0]
    assert stem.weight == (16, 3, 3, 3) and stem.flops() == 2 * 3 * (16 * 16) * 16 * 3 * 9  # 2·B·H'·W'·C_out·C_in·9
    up = [c for c in calls if c.transposed]
    assert len(up) == 1 and up[0].input == (3, 32, 8, 8) and up[0].output_shape() == (3, 32, 16, 16)
    # nearest ×2 then 3×3 would take 9 multiply-adds per channel pair and output pixel; the
    # folded 4×4 transposed kernel takes 16 per input pixel, 4/9 as many
    assert up[0].flops() == 2 * 3 * (8 * 8) * 32 * 32 * 16 == 2 * 3 * (16 * 16) * 32 * 32 * 9 * 4 // 9

    for c in set(calls):
        xc, w = torch.randn(c.input, requires_grad=True), torch.randn(c.weight, requires_grad=True)
        with FlopCounterMode(display=False) as fc:
            out = c.run(xc, w, None)
            out.backward(torch.ones_like(out))
        assert out.shape == c.output_shape()
        assert fc.get_total_flops() == 3 * c.flops()  # the backward: input and weight gradients

