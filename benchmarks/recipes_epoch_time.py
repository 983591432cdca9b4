"""Seconds per epoch of each recipe of docs/recipes.md on this CPU, and an estimate for one GPU.

For each recipe the script writes synthetic data of the recipe's shape (random uint8 images
in a .npy, or the 2-D generator itself), parses the recipe's own `ddpmkit train` command line
(the one the page shows, with --data pointed at the synthetic file), trains a few optimiser
steps through the real Trainer (no end-of-run pictures) and reads the per-step times from
a clock read after every step. An epoch is ⌈N / batch⌉ steps for the tutorial's N (TrainConfig.steps_for), so

    seconds per epoch = median seconds per step × ⌈N / batch⌉.

The per-step time of in-memory data does not depend on N, so image sets bigger than
MAX_ARRAY_BYTES are written with fewer images than N (the count used for the epoch is
always the tutorial's; a folder of JPEGs too large to preload, such as CelebA at 64 px,
also pays for decoding, which this does not measure). Both wall-clock and CPU seconds per
step are kept: on a shared machine the CPU time of the process is what one idle core would
take (both clocks are read after every step by a loggers.Logger given to the Trainer),
and the script prints the load average it ran under.

The GPU column is an estimate, not a measurement: the floating-point operations of one
training step (forward and backward of the network, counted by torch's FlopCounterMode on
one batch) over an assumed sustained GPU_FLOPS (an A100-class GPU at about a third of its
TF32 peak), with a floor of GPU_STEP_FLOOR_S per step for the kernel launches of small
networks that no GPU runs faster than.

    OMP_NUM_THREADS=1 python benchmarks/recipes_epoch_time.py            # every recipe
    OMP_NUM_THREADS=1 python benchmarks/recipes_epoch_time.py --only moons,fashion-mnist
    python benchmarks/recipes_epoch_time.py --json out.json               # also the numbers as JSON
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import shlex
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from ddpmkit import api, build
from ddpmkit.training import diffusion
from ddpmkit.cli import parser as cli_parser
from ddpmkit.cli.train import config_from_args
from ddpmkit.data import batches
from ddpmkit.rundir import write_config

MAX_ARRAY_BYTES = 256 * 2**20  # synthetic image arrays are capped at this size (the epoch still counts N)
GPU_FLOPS = 50e12  # assumed sustained training throughput of one A100-class GPU, FLOP/s
GPU_STEP_FLOOR_S = 0.003  # no step of a small network takes less on a GPU (kernel launches)


@dataclass(frozen=True)
class Recipe:
    name: str
    count: int  # N, the tutorial's training examples
    shape: tuple[int, ...] | None  # (H, W, C) of the images; None: 2-D points
    command: str  # the recipe's `ddpmkit train` options, as docs/recipes.md shows them (DATA: the data option)


# The commands of docs/recipes.md (keep the two in step). DATA stands for --data's value.
RECIPES = [
    Recipe("fashion-mnist", 60_000, (28, 28, 1),
           "--data DATA --image-size 28 --timesteps 200 --schedule linear --beta-start 1e-4 --beta-end 0.02 --loss huber --epochs 5 "
           "--batch-size 128 --lr 1e-3 --warmup-steps 0 --grad-clip 0 --block convnext --width 28 --channel-mults 1,2,4 "
           "--blocks-per-level 2 --linear-attention-res 28,14,7 --dropout 0 --hflip"),
    Recipe("mnist", 60_000, (28, 28, 1),
           "--data DATA --image-size 28 --timesteps 200 --schedule linear --beta-start 1e-4 --beta-end 0.02 --loss huber --epochs 5 "
           "--batch-size 128 --lr 1e-3 --warmup-steps 0 --grad-clip 0 --block convnext --width 28 --channel-mults 1,2,4 "
           "--blocks-per-level 2 --linear-attention-res 28,14,7 --dropout 0 --no-hflip"),
    Recipe("celeba-32", 202_599, (32, 32, 3),
           "--data DATA --image-size 32 --timesteps 1000 --schedule linear --beta-start 1e-4 --beta-end 0.02 --loss l2 "
           "--epochs 1 --batch-size 32 --lr 2e-4 --warmup-steps 0 --width 64 --channel-mults 1,2,4,8 --blocks-per-level 2 "
           "--attention-res 8,4 --groups 8 --dropout 0 --hflip"),
    Recipe("celeba-64", 202_599, (64, 64, 3),
           "--data DATA --image-size 64 --timesteps 1000 --schedule linear --beta-start 1e-4 --beta-end 0.02 --loss l2 "
           "--epochs 1 --batch-size 32 --lr 2e-4 --warmup-steps 0 --width 64 --channel-mults 1,2,4,8 --blocks-per-level 2 "
           "--attention-res 16,8 --groups 8 --dropout 0 --hflip"),
    Recipe("cats-64", 12_500, (64, 64, 3),
           "--data DATA --image-size 64 --timesteps 1000 --schedule linear --beta-start 1e-4 --beta-end 0.02 --loss l2 "
           "--epochs 1 --batch-size 32 --lr 2e-4 --warmup-steps 0 --width 64 --channel-mults 1,2,4,8 --blocks-per-level 2 "
           "--attention-res 16,8 --groups 8 --dropout 0 --hflip"),
    Recipe("flowers-64", 1_020, (64, 64, 3),
           "--data DATA --image-size 64 --timesteps 1000 --schedule linear --beta-start 1e-4 --beta-end 0.02 --loss l2 "
           "--epochs 1 --batch-size 32 --lr 2e-4 --warmup-steps 0 --width 64 --channel-mults 1,2,4,8 --blocks-per-level 2 "
           "--attention-res 16,8 --groups 8 --dropout 0 --hflip"),
    Recipe("flowers-128", 8_189, (128, 128, 3),
           "--data DATA --image-size 128 --timesteps 1000 --schedule linear --beta-start 1e-4 --beta-end 0.02 --loss l1 "
           "--epochs 1 --batch-size 16 --lr 2e-4 --warmup-steps 0 --width 64 --channel-mults 1,2,4,8 --blocks-per-level 2 "
           "--attention-res 16 --groups 8 --dropout 0 --hflip"),
    Recipe("swiss-roll", 10_000, None,
           "--data swiss-roll --num-points 10000 --toy-noise 1.0 --timesteps 100 --schedule sigmoid --beta-start 1e-5 "
           "--beta-end 1e-2 --epochs 1000 --batch-size 128 --lr 1e-3 --grad-clip 1 --ema-decay 0.9 --net gated-mlp --width 128"),
    Recipe("s-curve", 10_000, None,
           "--data s-curve --num-points 10000 --toy-noise 0.1 --timesteps 100 --schedule sigmoid --beta-start 1e-5 "
           "--beta-end 5e-3 --epochs 5000 --batch-size 128 --lr 1e-3 --grad-clip 1 --net mlp --width 128"),
    Recipe("moons", 1_000, None,
           "--data moons --num-points 1000 --toy-noise 0.05 --timesteps 1000 --schedule linear --beta-start 1e-4 "
           "--beta-end 0.02 --epochs 10000 --batch-size 1000 --lr 1e-3 --grad-clip 0 --net mlp --width 128"),
]


def synthetic_data(recipe: Recipe, folder: Path) -> str:
    """--data for the recipe: a .npy of random uint8 images of its shape (at most MAX_ARRAY_BYTES), or the toy set."""
    if recipe.shape is None:
        return recipe.command.split("--data ")[1].split()[0]
    count = min(recipe.count, max(64, MAX_ARRAY_BYTES // math.prod(recipe.shape)))
    path = folder / f"{recipe.name}.npy"
    np.save(path, np.random.default_rng(0).integers(0, 256, (count, *recipe.shape), dtype=np.uint8))
    return str(path)


def recipe_config(recipe: Recipe, data: str):
    """The RunConfig the recipe's command line makes (cli.train.config_from_args), data resolved later."""
    argv = ["train", *shlex.split(recipe.command.replace("DATA", shlex.quote(data)))]
    return config_from_args(cli_parser().parse_args(argv))


def step_flops(config) -> float:
    """FLOPs of one training step's forward and backward pass on one batch (FlopCounterMode)."""
    kind = build.modality(config)
    dataset, data = kind.load(config.seed)
    config = build.resolve_config(config, data)
    kind = build.modality(config)
    denoiser = build.build_denoiser(config, build.build_net(config))
    raw, _ = next(batches(dataset, config.train.batch_size, config.seed))
    x0 = kind.to_model_space(raw)
    t = torch.randint(0, config.diffusion.num_steps, (len(x0),))
    with FlopCounterMode(display=False) as counter:
        denoiser.net(x0, t).float().square().mean().backward()
    return float(counter.get_total_flops())


class StepClock:
    """A loggers.Logger that notes the process's CPU time and the wall clock at every log record."""

    def __init__(self):
        self.cpu0, self.wall0 = time.process_time(), time.perf_counter()
        self.cpu: list[float] = []
        self.wall: list[float] = []

    def start(self, config: dict, step: int, logged: int) -> None:
        self.cpu0, self.wall0 = time.process_time(), time.perf_counter()

    def log_scalars(self, step: int, values: dict) -> None:
        self.cpu.append(time.process_time())
        self.wall.append(time.perf_counter())

    def log_image(self, step: int, tag: str, path) -> None:
        pass

    def close(self) -> None:
        pass


def measure(recipe: Recipe, folder: Path, steps: int, warmup: int) -> dict:
    data = synthetic_data(recipe, folder)
    config = recipe_config(recipe, data)
    short = dataclasses.replace(config, train=dataclasses.replace(
        config.train, epochs=None, steps=warmup + steps, log_every=1, sample_every=0, checkpoint_every=0, warmup_steps=0))
    out = folder / f"run-{recipe.name}"
    trainer, resolved, _ = diffusion.trainer(short, out, progress=False)
    write_config(out, resolved)
    clock = StepClock()
    trainer.logger = clock  # called after every step (log_every 1): the process's CPU and wall clocks then
    trainer.fit()
    cpu_clock, wall_clock = [clock.cpu0, *clock.cpu], [clock.wall0, *clock.wall]  # before step 1, after each step
    cpu = statistics.median(np.diff(cpu_clock)[warmup:])
    wall = statistics.median(np.diff(wall_clock)[warmup:])
    timed = len(cpu_clock) - 1 - warmup
    steps_per_epoch = math.ceil(recipe.count / config.train.batch_size)
    flops = step_flops(short)
    gpu_step = max(flops / GPU_FLOPS, GPU_STEP_FLOOR_S)
    return {
        "recipe": recipe.name, "examples": recipe.count, "batch": config.train.batch_size, "steps_per_epoch": steps_per_epoch,
        "epochs": config.train.epochs, "wall_s_per_step": round(wall, 4), "cpu_s_per_step": round(cpu, 4),
        "cpu_s_per_epoch": round(cpu * steps_per_epoch, 3), "wall_s_per_epoch": round(wall * steps_per_epoch, 3),
        "gflop_per_step": round(flops / 1e9, 2), "gpu_s_per_epoch_estimate": round(gpu_step * steps_per_epoch, 3),
        "timed_steps": timed,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--only", help="comma-separated recipe names (default: all)")
    p.add_argument("--steps", type=int, default=3, help="timed optimiser steps per recipe")
    p.add_argument("--warmup", type=int, default=1, help="steps before the timed ones (at least 1: the first step allocates)")
    p.add_argument("--json", type=Path, help="also write the rows to this JSON file")
    args = p.parse_args()
    chosen = [r for r in RECIPES if not args.only or r.name in args.only.split(",")]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s) (OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}), "
          f"load average {os.getloadavg()[0]:.1f} at the start")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for recipe in chosen:
            row = measure(recipe, Path(tmp), args.steps, args.warmup)
            rows.append(row)
            print(json.dumps(row), flush=True)
    print(f"load average {os.getloadavg()[0]:.1f} at the end")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
