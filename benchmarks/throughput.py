"""Training and sampling throughput of ddpmkit's U-Net configs on this machine.

For each config it prints
- training images/s: optimiser steps of the real Trainer (data, q_sample, loss, backward,
  gradient clipping, AdamW, EMA), timed from the Trainer's own log after warm-up steps;
- sampling images/s per network evaluation: one no-grad denoiser call (x̂_0 and ε̂ from the
  network output, as every sampler makes it) on a batch, so a sampler with n network
  evaluations draws (that figure / n) images per second.

Configs: the default digits run (8x8 grey, batch 128) and the default for a user's images
at 32x32x3 (the DDPM CIFAR-10 layout, batch 64) on random data of that shape.

How close each comes to the machine: FLOPs per image are counted with FlopCounterMode at
batch 1 (convolutions, matrix products and attention, the last through SDPA's math backend;
element-wise work is not counted; training is forward + backward, sampling forward), and
achieved GFLOP/s = images/s × FLOPs per image is divided by two rates measured in the same run
at the same thread count (benchmarks/rates.py): the fp32 GEMM rate (4096² torch.mm) and the
rate of the U-Net's own convolutions (every 3×3 one and the Upsample's 4×4 transposed one, as
the network runs them at the training and the sampling batch, replayed on channels-last fp32
tensors: forward + backward against training, forward against sampling; FLOPs counted directly
as 2 per multiply-add; median and range over repeats). The lower of the two is the ceiling.

Then the speed and memory flags on the 32x32x3 config, each against its fp32 row measured in
the same run: `--precision bf16` (autocast; fast on CPUs with AVX-512 bf16) and
`--grad-checkpoint` (recomputes each block's activations in the backward pass).

    python benchmarks/throughput.py                 # both configs
    python benchmarks/throughput.py --only digits   # one
    python benchmarks/throughput.py --threads 2 --no-flags
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from ddpmkit import api
from ddpmkit.build import build_denoiser, build_net, modality, resolve_config
from ddpmkit.nets.unet import count_parameters
from ddpmkit.rundir import read_log
from rates import conv_gflops, counted_flops, gemm_gflops, record_convolutions


def make_config(name: str, data_dir: Path):
    """The default RunConfig of `name`, its data resolved; 32px data is random uint8 in a .npy."""
    if name == "digits":
        return api.default_config("digits")
    path = data_dir / "random-32x32x3.npy"
    np.save(path, np.random.default_rng(0).integers(0, 256, (512, 32, 32, 3), dtype=np.uint8))
    return api.default_config(str(path))


def training_images_per_s(config, steps: int, warmup: int, out: Path) -> float:
    """Median images/s over the timed steps of a real training run (no end-of-run pictures)."""
    config = dataclasses.replace(config, train=dataclasses.replace(
        config.train, steps=warmup + steps, log_every=1, sample_every=0, checkpoint_every=0, warmup_steps=0))
    api.train(config, out, progress=False, pictures=False)
    elapsed = [r["elapsed_s"] for r in read_log(out / "log.jsonl")]
    per_step = np.diff(elapsed)[warmup - 1:]
    return config.train.batch_size / statistics.median(per_step)


@torch.no_grad()
def sampling_images_per_nfe(config, batch: int, repeats: int) -> float:
    """Images/s of one no-grad denoiser evaluation at `batch` (median of `repeats`)."""
    _, data = modality(config).load(config.seed)
    config = resolve_config(config, data)
    net = build_net(config).eval()
    denoiser = build_denoiser(config, net)
    h, w = config.data.image_size
    x = torch.randn(batch, config.data.channels, h, w)
    t = torch.full((batch,), 500)
    for _ in range(3):
        denoiser(x, t)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        denoiser(x, t)
        times.append(time.perf_counter() - start)
    return batch / statistics.median(times), count_parameters(net)


def ceilings(config, train_batch: int, sample_batch: int, repeats: int) -> dict:
    """The U-Net's counted FLOPs per image (forward; forward + backward) and the machine's
    GFLOP/s per repeat on its own convolutions: forward + backward as run at `train_batch`,
    forward as run at `sample_batch`."""
    _, data = modality(config).load(config.seed)
    config = resolve_config(config, data)
    net = build_net(config)
    h, w = config.data.image_size
    x, t = torch.randn(1, config.data.channels, h, w), torch.tensor([500])
    fwd_flops, train_flops = counted_flops(net, lambda: net(x, t))
    calls = {}
    for kind, batch in (("train", train_batch), ("sample", sample_batch)):
        net.train(kind == "train")
        calls[kind] = record_convolutions(lambda: net(x.expand(batch, -1, -1, -1), t.expand(batch)))
    return {"fwd_flops": fwd_flops, "train_flops": train_flops,
            "conv_share": sum(c.flops() for c in calls["sample"]) / sample_batch / fwd_flops,
            "train_conv": conv_gflops(calls["train"], backward=True, repeats=repeats),
            "sample_conv": conv_gflops(calls["sample"], backward=False, repeats=repeats)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--only", choices=["digits", "32px"], help="one config only")
    p.add_argument("--threads", type=int, help="torch threads (default: all cores)")
    p.add_argument("--no-flags", action="store_true", help="skip the speed-flag rows")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    plans = {  # name: (timed training steps, warm-up steps, sampling batch, repeats)
        "digits": (60, 5, 256, 20),
        "32px": (8, 2, 64, 5),
    }
    names = [args.only] if args.only else list(plans)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"load average {os.getloadavg()[0]:.1f} (1 min)")
    gemm = gemm_gflops()
    print(f"fp32 GEMM (4096² torch.mm): {gemm:.1f} GFLOP/s", flush=True)
    print(f"{'config':<8} {'params':>11} {'batch':>6} {'train img/s':>12} {'sample img/s per NFE':>21}")
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            steps, warmup, sample_batch, repeats = plans[name]
            config = make_config(name, Path(tmp))
            train_rate = training_images_per_s(config, steps, warmup, Path(tmp) / f"run-{name}")
            sample_rate, params = sampling_images_per_nfe(config, sample_batch, repeats)
            print(f"{name:<8} {params:>11,} {config.train.batch_size:>6} {train_rate:>12.1f} "
                  f"{sample_rate:>14.1f} (b={sample_batch})", flush=True)
            cost = ceilings(config, config.train.batch_size, sample_batch, repeats)
            print(f"  counted GFLOP/image: forward {cost['fwd_flops'] / 1e9:.4f}, training {cost['train_flops'] / 1e9:.4f} "
                  f"(convolutions {cost['conv_share']:.0%} of the forward)")
            for kind, rate, flops, conv, what in (
                    ("train", train_rate, cost["train_flops"], cost["train_conv"], "fwd+bwd"),
                    ("sample", sample_rate, cost["fwd_flops"], cost["sample_conv"], "forward")):
                achieved, conv_rate = rate * flops / 1e9, statistics.median(conv)
                ceiling = "its convolutions" if conv_rate < gemm else "GEMM"
                print(f"  {kind:<6} {achieved:>6.1f} GFLOP/s = {achieved / gemm:.0%} of the fp32 GEMM rate, "
                      f"{achieved / conv_rate:.0%} of its convolutions' {what} rate ({conv_rate:.1f} GFLOP/s, "
                      f"{min(conv):.1f}-{max(conv):.1f} over {len(conv)} repeats); the ceiling: {ceiling}", flush=True)
            if name == "32px" and not args.no_flags:
                flags = {
                    "--precision bf16": dataclasses.replace(config, train=dataclasses.replace(config.train, precision="bf16")),
                    "--grad-checkpoint": dataclasses.replace(config, net=dataclasses.replace(config.net, grad_checkpoint=True)),
                }
                for flag, flagged in flags.items():
                    rate = training_images_per_s(flagged, steps, warmup, Path(tmp) / f"run-{name}{flag.replace(' ', '')}")
                    print(f"  {flag:<18} train img/s {rate:>6.1f} = {rate / train_rate:.2f}x fp32", flush=True)
    print(f"load average {os.getloadavg()[0]:.1f} (1 min) at the end")


if __name__ == "__main__":
    main()
