"""Command line: `ddpmkit train | sample | show-forward | evaluate | compare-samplers`.

Parses, validates, calls the API. The only module that prints for the user or exits
with a code: 0 success, 1 training diverged, 2 bad input (one line, no traceback).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

from .config import LR_DECAYS, PRECISIONS, RunConfig
from .data.toy import TOY_DATASETS
from .denoiser import PREDICTIONS, VARIANCES
from .errors import UserError
from .losses import LOSSES
from .nets.unet import BLOCKS
from .schedules import SCHEDULES, SPACINGS

DATA_HELP = f"{', '.join(TOY_DATASETS)} (2-D toy sets), digits (8x8 images, the default), a folder of images, a .npy/.npz array file, or hf:NAME"

# CLI option -> (config section, field). None means "leave the default".
TRAIN_OPTIONS = {
    "schedule": ("diffusion", "schedule"),
    "timesteps": ("diffusion", "num_steps"),
    "prediction": ("diffusion", "prediction"),
    "variance": ("diffusion", "variance"),
    "loss": ("diffusion", "loss"),
    "min_snr_gamma": ("diffusion", "min_snr_gamma"),
    "steps": ("train", "steps"),
    "batch_size": ("train", "batch_size"),
    "lr": ("train", "lr"),
    "weight_decay": ("train", "weight_decay"),
    "warmup_steps": ("train", "warmup_steps"),
    "lr_decay": ("train", "lr_decay"),
    "grad_clip": ("train", "grad_clip"),
    "ema_decay": ("train", "ema_decay"),
    "grad_accum": ("train", "grad_accum"),
    "workers": ("train", "num_workers"),
    "log_every": ("train", "log_every"),
    "sample_every": ("train", "sample_every"),
    "checkpoint_every": ("train", "checkpoint_every"),
    "keep": ("train", "keep"),
    "num_points": ("data", "num_points"),
    "holdout": ("data", "holdout"),
    "channels": ("data", "channels"),
    "hflip": ("data", "hflip"),
    "p_uncond": ("train", "p_uncond"),
    "precision": ("train", "precision"),
    "compile": ("train", "compile"),
    "grad_checkpoint": ("net", "grad_checkpoint"),
}
# Options a resumed run may change (the rest of its config is fixed by config.json). None
# changes the network's shape or the data, t and ε it sees, so the checkpoint still fits;
# but --steps moves the end of the cosine LR decay (later weights then differ from a run
# trained with the new --steps from the start), and --precision and --compile round differently.
RESUMABLE = {"steps", "workers", "log_every", "sample_every", "checkpoint_every", "keep", "precision", "compile", "grad_checkpoint"}


def _add_train(sub) -> None:
    p = sub.add_parser(
        "train",
        help="train a diffusion model (default: 8x8 digits images)",
        description="Train a diffusion model and write a run directory: config.json, model.safetensors, "
        "ema.safetensors, state.pt, log.jsonl, checkpoints/ and pictures. Data-parallel on N GPUs or CPU "
        "processes: torchrun --nproc-per-node N -m ddpmkit train ... (--batch-size is then the global batch, "
        "split over the processes; --resume works with any N).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--data", default="digits", help=DATA_HELP)
    p.add_argument("--out", type=Path, help="run directory to create (default: runs/<data>-<time>/)")
    p.add_argument("--resume", type=Path, metavar="DIR", help="continue the run in DIR from its newest complete checkpoint")
    g = p.add_argument_group("diffusion")
    g.add_argument("--schedule", choices=None, help=f"beta schedule: {', '.join(SCHEDULES)} (default cosine)")
    g.add_argument("--timesteps", type=int, help="T, the number of diffusion steps (default 1000)")
    g.add_argument("--prediction", help=f"network target: {', '.join(PREDICTIONS)} (default eps)")
    g.add_argument("--variance", help=f"reverse variance: {', '.join(VARIANCES)} (default fixed_small)")
    g.add_argument("--loss", help=f"loss on the target: {', '.join(LOSSES)} (default l2)")
    g.add_argument("--min-snr-gamma", type=float, help="min-SNR-γ loss weighting, e.g. 5 (default 0: off)")
    g = p.add_argument_group("network")
    g.add_argument("--net", help="2-D data: mlp (sinusoidal time embedding, default) or gated-mlp (per-timestep gates)")
    g.add_argument("--width", type=int, help="hidden width (MLP) or base channel width (U-Net)")
    g.add_argument("--channel-mults", metavar="M,M,...", help="U-Net: width multiplier per level, the size halving "
                   "between levels (default 1,2 for digits; 1,2,2,2 for your images)")
    g.add_argument("--blocks-per-level", type=int, help="U-Net: blocks per encoder level (default 1 for digits, 2 for your images)")
    g.add_argument("--block", choices=BLOCKS, help="U-Net block: resnet (DDPM's, default) or convnext")
    g.add_argument("--attention-res", metavar="PX,...|none", help="U-Net: level sizes (smaller side, px) with full "
                   "self-attention (default 16 for your images, none for digits)")
    g.add_argument("--linear-attention-res", metavar="PX,...|none", help="U-Net: level sizes with linear attention (default none)")
    g.add_argument("--heads", type=int, help="U-Net: attention heads (default 4)")
    g.add_argument("--dropout", type=float, help="U-Net: dropout in each block, in [0, 1) (default 0.1 for your images, 0 for digits)")
    g = p.add_argument_group("data")
    g.add_argument("--num-points", type=int, help="2-D data: training points drawn once (default 20000)")
    g.add_argument("--image-size", help="images: SIZE or HEIGHTxWIDTH after resize and centre crop")
    g.add_argument("--channels", type=int, help="images: 1 (grey), 2 (grey+alpha), 3 (RGB) or 4 (RGBA); default from the data")
    g.add_argument("--holdout", type=float, help="images: share of the data kept out of training (a fixed seeded "
                   "split) for the held-out likelihood of evaluate --nll (default 0.1 for digits, 0 otherwise)")
    g.add_argument("--hflip", action=argparse.BooleanOptionalAction, default=None, help="random horizontal flips (default: on for folders)")
    g = p.add_argument_group("optimisation")
    g.add_argument("--steps", type=int, help="optimiser steps")
    g.add_argument("--batch-size", type=int, help="global batch: examples per optimiser step, summed over all "
                   "torchrun processes and --grad-accum micro-batches")
    g.add_argument("--lr", type=float, help="peak learning rate (AdamW)")
    g.add_argument("--weight-decay", type=float, help="AdamW weight decay")
    g.add_argument("--warmup-steps", type=int, help="linear LR warm-up steps")
    g.add_argument("--lr-decay", help=f"after warm-up: {', '.join(LR_DECAYS)}")
    g.add_argument("--grad-clip", type=float, help="max gradient norm (0 disables)")
    g.add_argument("--ema-decay", type=float, help="EMA decay per step, in [0, 1)")
    g.add_argument("--grad-accum", type=int, help="micro-batches per optimiser step")
    g.add_argument("--workers", type=int, help="data-loader worker processes")
    g.add_argument("--seed", type=int, help="seed for weights, batch order, t and noise (default 0)")
    g = p.add_argument_group("speed and memory")
    g.add_argument("--precision", choices=PRECISIONS, help="fp32; bf16: autocast to bfloat16 (CUDA, CPUs with "
                   "AVX-512 bf16); fp16: autocast to float16 with loss scaling (CUDA). Default fp32")
    g.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                   help="torch.compile the network for training (slow first steps, faster after; default off)")
    g.add_argument("--grad-checkpoint", action=argparse.BooleanOptionalAction, default=None,
                   help="U-Net: recompute each block's activations in the backward pass (less memory, up to "
                   "one more forward pass per step; default off)")
    g = p.add_argument_group("class conditioning (classifier-free guidance)")
    g.add_argument("--conditional", action="store_true", default=None, help="condition on the data's class labels")
    g.add_argument("--p-uncond", type=float, help="probability a label is dropped to the null label (default 0.1)")
    g = p.add_argument_group("output")
    g.add_argument("--log-every", type=int, help="steps per log.jsonl record")
    g.add_argument("--sample-every", type=int, help="steps between sample pictures in samples/ (0: end only)")
    g.add_argument("--checkpoint-every", type=int, help="steps between checkpoints (0: end only)")
    g.add_argument("--keep", type=int, help="step checkpoints kept on disk (default 3)")
    g.add_argument("--device", help="cpu, cuda, cuda:N or mps (default: the best available)")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")


def _add_sample(sub) -> None:
    p = sub.add_parser(
        "sample",
        help="draw samples from a trained run",
        description="Draw samples from a run: SDIR/samples.npy (2-D: float [N, 2] in data space; images: uint8 "
        "[N, H, W, C]) and SDIR/samples.png. For 2-D data also prints the distance to fresh data.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--run", type=Path, required=True, help="a run directory written by ddpmkit train")
    p.add_argument("-n", "--num-samples", type=int, default=64, help="how many samples")
    p.add_argument("--out", type=Path, help="output directory (default: RUN/samples)")
    p.add_argument("--seed", type=int, default=0, help="seed of the sampling noise")
    p.add_argument("--ema", action=argparse.BooleanOptionalAction, default=True, help="use the EMA weights")
    p.add_argument("--sampler", default="ddpm", help="ddpm (ancestral), ddim, dpm++ (DPM-Solver++ 2M, the ODE), dpm++sde (SDE-DPM-Solver++ 2M) or heun")
    p.add_argument("--steps", type=int, help="sampling steps out of the trained T (default: all T)")
    p.add_argument("--spacing", choices=SPACINGS, default="linspace", help="which --steps timesteps: linspace (evenly "
                   "from T-1 to 0), leading (0, k, 2k, ...: DDIM's), trailing (T-1, T-1-k, ...: Lin et al. 2024)")
    p.add_argument("--eta", type=float, help="ddim only: 0 deterministic, 1 ancestral-like (default 0)")
    p.add_argument("--clip", choices=["static", "dynamic", "none"], help="keep x̂_0 in [-1, 1]: static clipping, "
                   "dynamic thresholding (Imagen) or none (default: static for images, none for 2-D data)")
    p.add_argument("--dynamic-threshold", type=float, default=0.995, metavar="P",
                   help="percentile of |x̂_0| for --clip dynamic (default 0.995)")
    p.add_argument("--class", dest="class_", metavar="K|all", help="conditional runs: draw class K, or 'all' (-n per class, a grid row each)")
    p.add_argument("--guidance", type=float, default=0.0, help="classifier-free guidance strength w: ε = (1+w)·ε(x,c) − w·ε(x,∅)")
    p.add_argument("--gif", action="store_true", help="also write reverse.gif: the reverse process (images: x_t beside x̂_0)")
    p.add_argument("--device", help="cpu, cuda, cuda:N or mps (default: the best available)")


def _add_show_forward(sub) -> None:
    p = sub.add_parser(
        "show-forward",
        help="draw the forward (noising) process on a few images",
        description="Draw q(x_t | x_0) at ten values of t on a few images, linear and cosine schedules side by side.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--data", default="digits", help="digits, a folder of images, a .npy/.npz file, or hf:NAME")
    p.add_argument("--out", type=Path, default=Path("forward.png"), help="PNG file to write")
    p.add_argument("--image-size", help="SIZE or HEIGHTxWIDTH (folders of mixed sizes need it)")
    p.add_argument("--channels", type=int, help="1, 2, 3 or 4 (default from the data)")
    p.add_argument("--num-images", type=int, default=4, help="how many images (rows per schedule)")
    p.add_argument("--timesteps", type=int, default=1000, help="T of both schedules")


class _DefaultsUnlessNone(argparse.ArgumentDefaultsHelpFormatter):
    """Shows an option's default, except None: its help then says what happens."""

    def _get_help_string(self, action):
        return action.help if action.default is None else super()._get_help_string(action)


def _add_evaluate(sub) -> None:
    p = sub.add_parser(
        "evaluate",
        help="measure a trained run: sample quality (FID/KID, precision/recall, copies) or likelihood",
        description="Measure a run and add the result to RUN/metrics.json. By default: sample quality. Images: "
        "Fréchet distance and KID to the run's data in a feature space (--features own: a small classifier ddpmkit "
        "trains on the run's data and keeps in RUN/features/; --features inception: FID's Inception-v3 from weights "
        "you supply), improved precision and recall (k = 3), and the share of samples that are near-copies of "
        "training images (picture: RUN/eval/closest_pairs.png). 2-D runs: MMD² and sliced Wasserstein to fresh "
        "points. Every number is printed with its sample count, sampler and network evaluations, features and "
        "reference set. With --nll it measures the likelihood instead: vlb, the full variational bound in bits/dim; "
        "ode, the exact likelihood of the probability-flow ODE; both, side by side.",
        formatter_class=_DefaultsUnlessNone,
    )
    p.add_argument("--run", type=Path, required=True, help="a run directory written by ddpmkit train")
    g = p.add_argument_group("sample quality (the default)")
    g.add_argument("-n", "--num-samples", type=int, help="samples to draw and measure (default 2000)")
    g.add_argument("--sampler", help="ddpm, ddim, dpm++, dpm++sde or heun (default dpm++sde)")
    g.add_argument("--steps", type=int, help="sampling steps, evenly spaced over the trained T (default 20)")
    g.add_argument("--features", help="images: own (ddpmkit's features for this data, the default) or inception (standard FID)")
    g.add_argument("--inception-weights", type=Path, metavar="PATH",
                   help="pt_inception-2015-12-05-6726825d.pth (pytorch-fid); default: look in torch hub's checkpoints cache")
    g.add_argument("--guidance", type=float, help="conditional runs: guidance w for the class-balanced samples (default 0)")
    g = p.add_argument_group("likelihood instead")
    g.add_argument("--nll", choices=["vlb", "ode", "both"], help="measure the NLL in bits/dim instead of sample quality")
    g.add_argument("--ode-points", type=int, default=100, help="--nll ode: timesteps asked for on the ODE grid, evenly "
                   "spread in log-SNR; repeats are dropped, so fewer may be used (printed); 2 network passes each")
    g.add_argument("--num-images", type=int, default=256, help="--nll: examples the likelihood is averaged over")
    p.add_argument("--seed", type=int, default=0, help="seed of the sampling noise (and of the noise in each NLL term)")
    p.add_argument("--ema", action=argparse.BooleanOptionalAction, default=True, help="use the EMA weights")
    p.add_argument("--device", help="cpu, cuda, cuda:N or mps (default: the best available)")


def _add_compare(sub) -> None:
    p = sub.add_parser(
        "compare-samplers",
        help="sample with every sampler at several step counts and compare quality and time",
        description="Trains nothing: samples a run with each sampler at each step count, measures quality "
        "(2-D: MMD and sliced Wasserstein to fresh points; images: the Fréchet distance in the run's own "
        "features, see ddpmkit evaluate), network evaluations and wall time per sample; writes compare.json and compare.png.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--run", type=Path, required=True, help="a run directory written by ddpmkit train")
    p.add_argument("--samplers", default=None, help="comma-separated (default: all)")
    p.add_argument("--steps", default="10,20,50,100,1000", help="comma-separated sampling step counts; those above "
                   "the run's T are skipped with a note")
    p.add_argument("-n", "--num-samples", type=int, default=500, help="samples per setting")
    p.add_argument("--spacing", choices=SPACINGS, default="linspace", help="timestep grid of each step count")
    p.add_argument("--out", type=Path, help="output directory (default: RUN/compare)")
    p.add_argument("--seed", type=int, default=0, help="seed of the sampling noise")
    p.add_argument("--device", help="cpu, cuda, cuda:N or mps (default: the best available)")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="ddpmkit",
        description="Train, sample and evaluate denoising diffusion probabilistic models. "
        "Start with `ddpmkit train` (8x8 digits, a few minutes on a CPU) or `ddpmkit train --data moons` (2-D, under a minute).",
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_train(sub)
    _add_sample(sub)
    _add_show_forward(sub)
    _add_evaluate(sub)
    _add_compare(sub)
    return p


def _with_options(config: RunConfig, args, options) -> RunConfig:
    """`config` with those of `options` (TRAIN_OPTIONS names) that were given applied."""
    changes: dict[str, dict] = {name: {} for name in ("data", "diffusion", "train", "net")}
    for option in options:
        if getattr(args, option) is not None:
            section, field = TRAIN_OPTIONS[option]
            changes[section][field] = getattr(args, option)
    if changes["net"] and config.is_toy:
        raise UserError("--grad-checkpoint applies to the U-Net of image data, not to the 2-D networks")
    if changes["data"].get("holdout") and config.is_toy:
        raise UserError("--holdout applies to image data; 2-D runs are scored on fresh points, so drop it")
    return dataclasses.replace(config, **{name: dataclasses.replace(getattr(config, name), **c) for name, c in changes.items() if c})


def _train_config(args) -> RunConfig:
    from .api import default_config
    from .nets.mlp import GatedMLPConfig, MLPConfig

    config = _with_options(default_config(args.data), args, TRAIN_OPTIONS)
    new = {name: getattr(config, name) for name in ("data", "diffusion", "train")}
    if args.image_size is not None:
        from .data.images import parse_image_size

        new["data"] = dataclasses.replace(new["data"], image_size=parse_image_size(args.image_size))
    net = config.net
    if args.net is not None:
        kinds = {"mlp": MLPConfig, "gated-mlp": GatedMLPConfig}
        if not config.is_toy or args.net not in kinds:
            raise UserError(f"--net {args.net!r} is not available for {args.data}; 2-D data takes: {', '.join(kinds)}")
        net = kinds[args.net]()
    if isinstance(net, GatedMLPConfig):
        net = dataclasses.replace(net, num_steps=new["diffusion"].num_steps)
    if args.width is not None:
        field = "base_width" if not config.is_toy else "hidden"
        net = dataclasses.replace(net, **{field: args.width})
    unet = {field: parse(getattr(args, option), option) for option, (field, parse) in UNET_OPTIONS.items()
            if getattr(args, option) is not None}
    if unet and config.is_toy:
        names = ", ".join("--" + o.replace("_", "-") for o in UNET_OPTIONS if getattr(args, o) is not None)
        raise UserError(f"{names} shape the U-Net of image data; 2-D data uses --net and --width")
    if unet and not config.is_toy:
        # the level sizes (and what divides them) depend on the image size: validate against the real one
        size = new["data"].image_size or ((8, 8) if args.data == "digits" else None)
        sized = [o for o in ("channel_mults", "attention_res", "linear_attention_res") if getattr(args, o) is not None]
        if size is None and sized:
            names = ", ".join("--" + o.replace("_", "-") for o in sized)
            raise UserError(f"{names} need --image-size: the U-Net's level sizes depend on it")
        if size is not None:
            unet["image_size"] = min(size)
    net = dataclasses.replace(net, **unet)
    seed = config.seed if args.seed is None else args.seed
    return dataclasses.replace(config, net=net, seed=seed, conditional=bool(args.conditional), **new)


def _sizes(text: str, option: str) -> tuple[int, ...]:
    """A comma-separated list of sizes, or none."""
    return () if text.strip().lower() == "none" else tuple(_ints(text, "--" + option.replace("_", "-")))


def _same(value, option: str):
    return value


# U-Net options: CLI option -> (UNetConfig field, how its text becomes the value)
UNET_OPTIONS = {
    "channel_mults": ("channel_mults", _sizes),
    "blocks_per_level": ("blocks_per_level", _same),
    "block": ("block", _same),
    "attention_res": ("attention_resolutions", _sizes),
    "linear_attention_res": ("linear_attention_resolutions", _sizes),
    "heads": ("attention_heads", _same),
    "dropout": ("dropout", _same),
}


def _run_train(args) -> int:
    from .api import train
    from .distributed import world_from_env

    world = world_from_env()  # torchrun's processes, read from the environment; only rank 0 prints
    say = print if world.is_main else lambda message: None
    if args.resume is not None:
        given = sorted(o for o in (*TRAIN_OPTIONS, *UNET_OPTIONS, "net", "width", "image_size", "seed", "conditional") if getattr(args, o) is not None and o not in RESUMABLE)
        if given:
            raise UserError(f"--resume continues a run with its own config.json; drop {', '.join('--' + g.replace('_', '-') for g in given)}")
        if args.out is not None and args.out != args.resume:
            raise UserError("--resume writes into the run it continues; drop --out")
        if not (args.resume / "config.json").is_file():
            raise UserError(f"{args.resume} is not a ddpmkit run (no config.json); pass the directory ddpmkit train wrote")
        config = _with_options(RunConfig.load(args.resume / "config.json"), args, RESUMABLE)
        out = args.resume
    else:
        config = _train_config(args)
        if args.out is None and world.active:
            raise UserError("under torchrun pass --out DIR: every process must name the same run directory")
        out = args.out or Path("runs") / f"{Path(args.data).stem or 'data'}-{time.strftime('%Y%m%d-%H%M%S')}"
        if (out / "config.json").exists():
            raise UserError(f"{out} already holds a run; continue it with --resume {out} or pick another --out")
        if args.out is None:
            say(f"writing the run to {out}")
    result = train(config, out, device=args.device, resume=args.resume is not None, report=say, progress=not args.no_progress)
    say(f"trained {result.steps} steps in {result.seconds:.1f} s (final loss {result.final_loss:.4f}); run directory: {out}")
    return 0


def _run_sample(args) -> int:
    from .api import sample, toy_distances
    from .build import load_run

    out = args.out or args.run / "samples"
    started = time.perf_counter()
    options = {}
    if args.eta is not None:
        if args.sampler != "ddim":
            raise UserError(f"--eta applies to --sampler ddim only, not {args.sampler}")
        options["eta"] = args.eta
    points = sample(args.run, args.num_samples, out, seed=args.seed, ema=args.ema, device=args.device, gif=args.gif,
                    class_=args.class_, guidance=args.guidance, sampler=args.sampler, steps=args.steps, spacing=args.spacing,
                    clip=args.clip, percentile=args.dynamic_threshold, **options)
    gif = " and reverse.gif" if args.gif else ""
    print(f"wrote {len(points)} samples to {out}/samples.npy, samples.png{gif} in {time.perf_counter() - started:.1f} s")
    config = RunConfig.load(args.run / "config.json")
    if config.is_toy and len(points) > 1:
        d = toy_distances(config, points)
        print(f"distance to {len(points)} fresh {config.data.name} points: MMD² {d['mmd']:.5f}, sliced Wasserstein {d['sliced_wasserstein']:.4f}")
    return 0


def _run_show_forward(args) -> int:
    from .api import show_forward
    from .data.images import parse_image_size

    if args.num_images <= 0:
        raise UserError(f"--num-images must be a positive integer, got {args.num_images}")
    if args.timesteps <= 0:
        raise UserError(f"--timesteps must be a positive integer, got {args.timesteps}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    show_forward(args.data, args.out, image_size=parse_image_size(args.image_size), channels=args.channels,
                 num_images=args.num_images, T=args.timesteps)
    print(f"wrote {args.out}")
    return 0


QUALITY_OPTIONS = ("num_samples", "sampler", "steps", "features", "inception_weights", "guidance")


def _run_evaluate(args) -> int:
    from .build import load_run, pick_device

    if args.nll is not None:
        given = [o for o in QUALITY_OPTIONS if getattr(args, o) is not None]
        if given:
            raise UserError(f"--nll measures the likelihood only; drop {', '.join('--' + o.replace('_', '-') for o in given)} "
                            "(or drop --nll to measure sample quality)")
        return _run_nll(args, load_run(args.run, ema=args.ema, device=pick_device(args.device)))
    from .evaluation import SampleSettings, evaluate_quality, format_report, write_quality_record

    given = {"num": args.num_samples, "sampler": args.sampler, "steps": args.steps, "guidance": args.guidance}
    settings = SampleSettings(seed=args.seed, ema=args.ema, **{k: v for k, v in given.items() if v is not None})
    run = load_run(args.run, ema=args.ema, device=pick_device(args.device))
    started = time.perf_counter()
    record = evaluate_quality(run, settings, features=args.features or "own", inception_weights=args.inception_weights, report=print)
    write_quality_record(args.run, record)
    print(f"sample quality of {args.run}:")
    for line in format_report(record):
        print(line)
    picture = f" and {record['memorisation']['picture']}" if "memorisation" in record else ""
    print(f"{time.perf_counter() - started:.1f} s; written to {args.run}/metrics.json (sample_quality){picture}")
    return 0


def _run_nll(args, run) -> int:
    from .api import evaluate_nll, write_metrics

    if args.num_images <= 0:
        raise UserError(f"--num-images must be a positive integer, got {args.num_images}")
    started = time.perf_counter()
    if args.ode_points < 2:
        raise UserError(f"--ode-points must be at least 2, got {args.ode_points}")
    titles = {"vlb": "variational bound, {} terms", "ode": "probability-flow ODE, {} distinct timesteps of "
              f"{args.ode_points} asked for"}
    for kind in ("vlb", "ode") if args.nll == "both" else (args.nll,):
        result = evaluate_nll(run, args.num_images, seed=args.seed, kind=kind, num_points=args.ode_points)
        write_metrics(args.run, result)
        print(f"NLL ({titles[kind].format(result[f'nll_{kind}_steps'])}): {result[f'nll_{kind}_bpd']:.4f} "
              f"± {result[f'nll_{kind}_stderr']:.4f} {result[f'nll_{kind}_unit']}")
    print(f"  on {result[f'nll_{kind}_reference']}; {time.perf_counter() - started:.1f} s; written to {args.run}/metrics.json")
    return 0


def _ints(text: str, option: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise UserError(f"{option} takes comma-separated integers, got {text!r}") from None


def _run_compare(args) -> int:
    from .api import compare_samplers
    from .build import load_run, pick_device
    from .samplers import SAMPLERS

    if args.num_samples <= 1:
        raise UserError(f"-n must be at least 2, got {args.num_samples}")
    samplers = args.samplers.split(",") if args.samplers else list(SAMPLERS)
    run = load_run(args.run, device=pick_device(args.device))
    out = args.out or args.run / "compare"
    compare_samplers(run, out, samplers=samplers, steps=_ints(args.steps, "--steps"), n=args.num_samples,
                     seed=args.seed, spacing=args.spacing, report=print)
    print(f"wrote {out}/compare.json and compare.png")
    return 0


COMMANDS = {
    "train": _run_train,
    "sample": _run_sample,
    "show-forward": _run_show_forward,
    "evaluate": _run_evaluate,
    "compare-samplers": _run_compare,
}


def one_line(message: str) -> str:
    """The user's one line of an error message. A DataLoader worker re-raises a UserError with
    its traceback in the message ("Caught UserError in DataLoader worker process 0. Original
    Traceback ... UserError: <the message>"): keep only what the error itself said. Any
    other message spread over lines (a library's error text quoted in it) is joined into one."""
    if "Original Traceback" in message:
        message = message.rpartition("UserError: ")[2]
    return " ".join(line.strip() for line in message.splitlines() if line.strip())


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except UserError as e:
        print(f"ddpmkit {args.command}: error: {one_line(str(e))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; the last complete checkpoint is intact (continue with --resume)", file=sys.stderr)
        return 130
    except Exception as e:
        from .train import TrainingDiverged

        if isinstance(e, TrainingDiverged):
            print(f"ddpmkit {args.command}: {e}", file=sys.stderr)
            return 1
        raise


if __name__ == "__main__":
    sys.exit(main())
