"""Training and network-evaluation speed of ddpmkit's U-Net beside diffusers' UNet2DModel
and lucidrains' denoising-diffusion-pytorch Unet, at matched parameter counts (32×32×3).

Targets (issue 6, benchmark, not tests): on a 2-core CPU, ddpmkit's training step and its
network evaluation each at least 1.25× the images/s of the faster peer.

What is timed, for each network, interleaved in one process on one torch:
  train  one optimiser step at --train-batch 32: forward in training mode, MSE against ε,
         backward, AdamW step (foreach, the CPU default; fused on CUDA).
  eval   one no-grad forward in eval mode at --eval-batch 64 (one sampler step).
Inputs are the same NCHW float32 tensors for all three (x ~ N(0, 1), t uniform in 0..999).
After --warmup rounds, --repeats rounds each run every network once, in an order that
rotates each round; the figure is the median per network. --precision bf16 runs all three
under the same CPU/CUDA autocast, --compile compiles all three with torch.compile.

FLOPs per image are counted with torch.utils.flop_counter.FlopCounterMode at batch 1
(convolutions, matrix products and attention, the last through the math backend of SDPA
so its matmuls are seen; element-wise work is not counted): forward, and forward +
backward for training (backward ≈ 2× forward; the AdamW update is not counted). Achieved
GFLOP/s = images/s × FLOPs per image; the machine's fp32 GEMM rate is measured in the same
run with a 4096² torch.mm at the same thread count.

Targets (issue 20): ddpmkit's fp32 training step at least 1.25× diffusers' images/s in both
configurations below (--size 3M, --size 6.5M; both by default).

Configuration 3M (issue 20's small one; lucidrains is left out): four resolutions (32, 16, 8,
4 px), widths 32, 64, 64, 128, one block per level, attention at 16 px and in the middle:
  ddpmkit    UNet(base_width=32, channel_mults=(1, 2, 2, 4), blocks_per_level=1,
             attention_resolutions=(16,), 4 heads of 16), 3.14 M parameters.
  diffusers  UNet2DModel(block_out_channels=(32, 64, 64, 128), layers_per_block=1,
             Down/AttnDown/Down/Down + Up/Up/AttnUp/Up, attention_head_dim=16), 3.00 M.

Configuration 6.5M: three resolutions (32, 16, 8 px), widths (w, 2w, 2w), two blocks per level,
full attention at 16 px and in the middle, time-conditioned residual blocks:
  ddpmkit    UNet(base_width=64, channel_mults=(1, 2, 2), blocks_per_level=2,
             attention_resolutions=(16,), 4 heads): ResBlocks with scale-shift GroupNorm,
             3 decoder blocks per level (DDPM layout).
  diffusers  UNet2DModel(block_out_channels=(64, 128, 128), layers_per_block=2,
             Down/AttnDown/Down + Up/AttnUp/Up blocks, attention_head_dim=32 (4 heads at
             128), mid-block attention): ResnetBlock2D with additive time embedding,
             3 decoder blocks per level (DDPM layout).
  lucidrains Unet(dim=72, dim_mults=(1, 2, 2), full_attn=(False, True, False),
             flash_attn=True, 4 heads of 32): its design puts linear attention at the
             levels without full attention (32 and 8 px) and 2 decoder blocks per level.
Parameter counts are printed and checked to lie within 10% of ddpmkit's.

Set-up: the peers are never dependencies of ddpmkit; they live in a separate venv with a
torch that has a matching torchvision (diffusers imports it). Install torch and torchvision
first, then ddpmkit with its `bench` extra:

    python -m venv /work/venv-bench
    /work/venv-bench/bin/pip install torch==2.14.1 torchvision==0.29.1   # x86_64; on aarch64 2.9.1 / 0.24.1
    /work/venv-bench/bin/pip install -e '.[bench]'                       # diffusers, denoising-diffusion-pytorch
    /work/venv-bench/bin/python benchmarks/peers.py                      # ~5 min on 2 cores
    /work/venv-bench/bin/python benchmarks/peers.py --precision bf16     # all three under bf16 autocast
    /work/venv-bench/bin/python benchmarks/peers.py --quick              # a smoke run, ~2 min
    /work/venv-bench/bin/python benchmarks/peers.py --size 3M --threads 2 # one configuration

Without denoising-diffusion-pytorch installed the script runs ddpmkit against diffusers only.

Run it on a quiet machine: other processes on the same cores stall every parallel region.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ddpmkit.nets.unet import UNet, UNetConfig, count_parameters
from rates import counted_flops, gemm_gflops

RESOLUTION, CHANNELS = 32, 3


@dataclass
class Entry:
    """One network under test: how to build it and how to call it as (x, t) -> ε̂."""

    name: str  # library
    described: str  # the configuration, in the library's own words
    build: Callable[[], nn.Module]
    call: Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]
    net: nn.Module | None = None
    params: int = 0
    fwd_flops: float = 0.0  # per image
    train_flops: float = 0.0  # per image, forward + backward
    times: dict[str, list[float]] = field(default_factory=lambda: {"train": [], "eval": []})  # seconds per call


def entries(size: str) -> list[Entry]:
    """The networks of one configuration: "6.5M" (three levels, two blocks each) or "3M" (the
    issue's small one: widths 32, 64, 64, 128, one block per level, attention at 16 px)."""
    from diffusers import UNet2DModel

    if size == "3M":
        ours = UNetConfig(in_channels=CHANNELS, out_channels=CHANNELS, base_width=32, channel_mults=(1, 2, 2, 4),
                          blocks_per_level=1, attention_resolutions=(16,), attention_heads=4, image_size=RESOLUTION)
        return [
            Entry("ddpmkit", "UNet(base_width=32, channel_mults=(1,2,2,4), blocks_per_level=1, attention_resolutions=(16,))",
                  lambda: UNet(ours), lambda m, x, t: m(x, t)),
            Entry("diffusers", "UNet2DModel(block_out_channels=(32,64,64,128), layers_per_block=1, AttnDown/AttnUp at 16 px)",
                  lambda: UNet2DModel(
                      sample_size=RESOLUTION, in_channels=CHANNELS, out_channels=CHANNELS, layers_per_block=1,
                      block_out_channels=(32, 64, 64, 128),
                      down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"),
                      up_block_types=("UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
                      attention_head_dim=16, norm_num_groups=32),
                  lambda m, x, t: m(x, t).sample),
        ]
    ours = UNetConfig(in_channels=CHANNELS, out_channels=CHANNELS, base_width=64, channel_mults=(1, 2, 2),
                      blocks_per_level=2, attention_resolutions=(16,), attention_heads=4, image_size=RESOLUTION)
    nets = [
        Entry("ddpmkit", "UNet(base_width=64, channel_mults=(1,2,2), blocks_per_level=2, attention_resolutions=(16,))",
              lambda: UNet(ours), lambda m, x, t: m(x, t)),
        Entry("diffusers", "UNet2DModel(block_out_channels=(64,128,128), layers_per_block=2, AttnDown/AttnUp at 16 px)",
              lambda: UNet2DModel(
                  sample_size=RESOLUTION, in_channels=CHANNELS, out_channels=CHANNELS, layers_per_block=2,
                  block_out_channels=(64, 128, 128),
                  down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D"),
                  up_block_types=("UpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
                  attention_head_dim=32, norm_num_groups=32),
              lambda m, x, t: m(x, t).sample),
    ]
    try:
        from denoising_diffusion_pytorch import Unet
    except ImportError:
        print("(denoising-diffusion-pytorch is not installed: lucidrains' Unet is left out)")
        return nets
    return nets + [
        Entry("lucidrains", "Unet(dim=72, dim_mults=(1,2,2), full_attn=(F,T,F), flash_attn=True)",
              lambda: Unet(dim=72, dim_mults=(1, 2, 2), channels=CHANNELS, full_attn=(False, True, False),
                           flash_attn=True, attn_heads=4, attn_dim_head=32),
              lambda m, x, t: m(x, t)),
    ]


def count_flops(entry: Entry) -> None:
    """Forward and forward+backward FLOPs per image (batch 1), attention through SDPA's math
    backend so that FlopCounterMode sees its matrix products."""
    x, t = torch.randn(1, CHANNELS, RESOLUTION, RESOLUTION), torch.tensor([500])
    entry.fwd_flops, entry.train_flops = counted_flops(entry.net, lambda: entry.call(entry.net, x, t))


def peer_version(package: str) -> str:
    try:
        return version(package)
    except PackageNotFoundError:
        return "not installed"


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def measure(size: str, args, peak: float) -> dict:
    """Time every network of configuration `size` and print its tables; returns the record."""
    autocast = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if args.precision == "bf16" else contextlib.nullcontext
    print(f"\n=== configuration {size} ===", flush=True)
    nets = entries(size)
    for e in nets:
        torch.manual_seed(0)
        e.net = e.build()
        e.params = count_parameters(e.net)
        count_flops(e)
    for e in nets[1:]:
        gap = e.params / nets[0].params - 1
        assert abs(gap) <= 0.10, f"{e.name} has {e.params:,} parameters, {gap:+.1%} from ddpmkit's {nets[0].params:,}"

    g = torch.Generator().manual_seed(0)
    x_train = torch.randn(args.train_batch, CHANNELS, RESOLUTION, RESOLUTION, generator=g)
    eps = torch.randn(x_train.shape, generator=g)
    t_train = torch.randint(0, 1000, (args.train_batch,), generator=g)
    x_eval = torch.randn(args.eval_batch, CHANNELS, RESOLUTION, RESOLUTION, generator=g)
    t_eval = torch.randint(0, 1000, (args.eval_batch,), generator=g)

    runners = {}
    for e in nets:
        fn = torch.compile(e.net) if args.compile else e.net
        optimizer = torch.optim.AdamW(e.net.parameters(), lr=1e-4)

        def train_step(e=e, fn=fn, optimizer=optimizer) -> None:
            e.net.train()
            optimizer.zero_grad(set_to_none=True)
            with autocast():
                out = e.call(fn, x_train, t_train)
            F.mse_loss(out.float(), eps).backward()
            optimizer.step()

        @torch.no_grad()
        def evaluate(e=e, fn=fn) -> None:
            e.net.eval()
            with autocast():
                e.call(fn, x_eval, t_eval)

        runners[e.name] = {"train": train_step, "eval": evaluate}

    for kind in ("train", "eval"):
        for r in range(args.warmup + args.repeats):
            order = nets[r % len(nets):] + nets[: r % len(nets)]
            for e in order:
                start = time.perf_counter()
                runners[e.name][kind]()
                if r >= args.warmup:
                    e.times[kind].append(time.perf_counter() - start)
            print(f"  {kind} round {r + 1}/{args.warmup + args.repeats}", flush=True)

    batch = {"train": args.train_batch, "eval": args.eval_batch}
    rate = {e.name: {k: batch[k] / statistics.median(e.times[k]) for k in batch} for e in nets}
    print()
    header = f"{'library':<11} {'params':>10} {'GFLOP/img':>10} {'train img/s':>12} {'train GFLOP/s':>14} {'eval img/s':>11} {'eval GFLOP/s':>13}"
    print(header)
    for e in nets:
        tr, ev = rate[e.name]["train"], rate[e.name]["eval"]
        print(f"{e.name:<11} {e.params:>10,} {e.fwd_flops / 1e9:>10.2f} {tr:>12.2f} "
              f"{tr * e.train_flops / 1e9:>8.1f} ({tr * e.train_flops / 1e9 / peak:>3.0%}) {ev:>11.2f} "
              f"{ev * e.fwd_flops / 1e9:>7.1f} ({ev * e.fwd_flops / 1e9 / peak:>3.0%})")
    print("(GFLOP/img: forward; training counts forward + backward, "
          f"{statistics.mean(e.train_flops / e.fwd_flops for e in nets):.2f}× forward; % of the fp32 GEMM rate)")
    ours = rate[nets[0].name]
    print()
    for kind in ("train", "eval"):
        ratios = {e.name: ours[kind] / rate[e.name][kind] for e in nets[1:]}
        faster = min(ratios, key=ratios.get)
        per_round = [b / a for a, b in zip(nets[0].times[kind], next(e for e in nets if e.name == faster).times[kind])]
        print(f"{kind}: ddpmkit / " + ", ".join(f"{n} {v:.2f}×" for n, v in ratios.items())
              + f"; against the faster peer ({faster}) {ratios[faster]:.2f}× (per round {min(per_round):.2f}-"
              f"{max(per_round):.2f}×; target 1.25×: " + ("met" if ratios[faster] >= 1.25 else "not met") + ")")

    print("\nMarkdown (README):\n")
    print("| library | configuration | parameters | GFLOP/image (fwd) | train images/s | eval images/s | ddpmkit ÷ it (train / eval) |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for e in nets:
        tr, ev = rate[e.name]["train"], rate[e.name]["eval"]
        ratio = "—" if e is nets[0] else f"{ours['train'] / tr:.2f}× / {ours['eval'] / ev:.2f}×"
        print(f"| {e.name} | `{e.described}` | {e.params / 1e6:.2f} M | {e.fwd_flops / 1e9:.2f} | {tr:.2f} | {ev:.2f} | {ratio} |")
    print(f"\ntorch {torch.__version__}, {torch.get_num_threads()} threads, {cpu_name()}, {args.precision}"
          f"{', compiled' if args.compile else ''}; fp32 GEMM {peak:.0f} GFLOP/s.")

    return {"nets": {e.name: {"params": e.params, "fwd_flops": e.fwd_flops, "train_flops": e.train_flops,
                              "seconds": e.times, "images_per_s": rate[e.name]} for e in nets},
            "train_ratio": {e.name: ours["train"] / rate[e.name]["train"] for e in nets[1:]},
            "eval_ratio": {e.name: ours["eval"] / rate[e.name]["eval"] for e in nets[1:]}}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice, all cores)")
    p.add_argument("--train-batch", type=int, default=32)
    p.add_argument("--eval-batch", type=int, default=64)
    p.add_argument("--warmup", type=int, default=2, help="untimed rounds first")
    p.add_argument("--repeats", type=int, default=7, help="timed rounds; the median is reported")
    p.add_argument("--precision", choices=["fp32", "bf16"], default="fp32", help="bf16: all three under autocast")
    p.add_argument("--compile", action="store_true", help="torch.compile all three (long warm-up)")
    p.add_argument("--quick", action="store_true", help="smoke run: 1 warm-up round, 5 timed")
    p.add_argument("--json", type=Path, help="also write every measurement here")
    p.add_argument("--size", choices=["3M", "6.5M", "both"], default="both",
                   help="which configuration: the small 3 M one, the 6.5 M one, or both (default)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.quick:
        args.warmup, args.repeats = 1, 5
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {cpu_name()} ({platform.machine()}); "
          f"diffusers {version('diffusers')}, denoising-diffusion-pytorch {peer_version('denoising-diffusion-pytorch')}")
    print(f"precision {args.precision}, compile {args.compile}, train batch {args.train_batch}, eval batch {args.eval_batch}, "
          f"{args.warmup} warm-up + {args.repeats} timed rounds, interleaved", flush=True)
    peak = gemm_gflops()
    print(f"fp32 GEMM (4096² torch.mm): {peak:.1f} GFLOP/s", flush=True)

    sizes = ["3M", "6.5M"] if args.size == "both" else [args.size]
    records = {size: measure(size, args, peak) for size in sizes}
    print()
    for size, record in records.items():
        print(f"{size}: ddpmkit ÷ diffusers, train {record['train_ratio']['diffusers']:.2f}×, "
              f"eval {record['eval_ratio']['diffusers']:.2f}× (target 1.25× in training)")
    if args.json:
        args.json.write_text(json.dumps({
            "torch": torch.__version__, "threads": torch.get_num_threads(), "cpu": cpu_name(),
            "precision": args.precision, "compile": args.compile, "gemm_fp32_gflops": peak, "configurations": records,
        }, indent=2))


if __name__ == "__main__":
    main()
