"""`ddpmkit train`: its options, the RunConfig they make (a preset with the options given
applied), and the call of api.train."""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

from ..config import LR_DECAYS, WIDTH_FIELDS, RunConfig
from ..data.images import parse_image_size
from ..denoiser import PREDICTIONS, VARIANCES
from ..distributed import world_from_env
from ..errors import UserError
from ..losses import LOSSES
from ..modality import UNET_OPTIONS, fit_attention, modality_for, plan_levels
from ..nets.mlp import GatedMLPConfig
from ..nets.unet import BLOCKS
from ..outputs import claim_run_directory
from ..rundir import check_writable
from ..posthoc_ema import DEFAULT_SIGMA_RELS
from ..schedules import SCHEDULES
from ..training_log import quality_text
from .options import DEVICE_HELP, add_grad_accum, add_logger, add_overwrite, add_precision, add_progress, command, data_help, sizes

# CLI option -> (config section, field). None means "leave the default".
TRAIN_OPTIONS = {
    "schedule": ("diffusion", "schedule"),
    "timesteps": ("diffusion", "num_steps"),
    "prediction": ("diffusion", "prediction"),
    "variance": ("diffusion", "variance"),
    "loss": ("diffusion", "loss"),
    "min_snr_gamma": ("diffusion", "min_snr_gamma"),
    "beta_start": ("diffusion", "beta_start"),
    "beta_end": ("diffusion", "beta_end"),
    "steps": ("train", "steps"),
    "epochs": ("train", "epochs"),
    "batch_size": ("train", "batch_size"),
    "lr": ("train", "lr"),
    "weight_decay": ("train", "weight_decay"),
    "warmup_steps": ("train", "warmup_steps"),
    "lr_decay": ("train", "lr_decay"),
    "grad_clip": ("train", "grad_clip"),
    "ema_decay": ("train", "ema_decay"),
    "ema_sigma_rel": ("train", "ema_sigma_rel"),
    "grad_accum": ("train", "grad_accum"),
    "workers": ("train", "num_workers"),
    "log_every": ("train", "log_every"),
    "sample_every": ("train", "sample_every"),
    "checkpoint_every": ("train", "checkpoint_every"),
    "eval_every": ("train", "eval_every"),
    "eval_samples": ("train", "eval_samples"),
    "logger": ("train", "loggers"),
    "keep": ("train", "keep"),
    "num_points": ("data", "num_points"),
    "toy_noise": ("data", "toy_noise"),
    "holdout": ("data", "holdout"),
    "channels": ("data", "channels"),
    "hflip": ("data", "hflip"),
    "p_uncond": ("train", "p_uncond"),
    "precision": ("train", "precision"),
    "compile": ("train", "compile"),
    "grad_checkpoint": ("net", "grad_checkpoint"),
    "posthoc_ema": ("train", "posthoc_ema"),
    "posthoc_every": ("train", "posthoc_every"),
    "guide_at": ("train", "guide_at"),
    "guide_width": ("train", "guide_width"),
}
# Options a resumed run may change (the rest of its config is fixed by config.json). None
# changes the network's shape or the data, t and ε it sees, so the checkpoint still fits;
# but --steps moves the end of the cosine LR decay (later weights then differ from a run
# trained with the new --steps from the start), and --precision and --compile round differently.
RESUMABLE = {"steps", "epochs", "workers", "log_every", "sample_every", "checkpoint_every", "keep", "precision", "compile", "grad_checkpoint",
             "eval_every", "logger", "posthoc_every"}


def _floats(text: str) -> tuple[float, ...]:
    """A comma-separated list of numbers (an argparse type)."""
    try:
        return tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"takes comma-separated numbers such as 0.05,0.10, got {text!r}") from None


def add_parser(sub) -> None:
    """train a diffusion model (default: 8x8 digits images)

    Train a diffusion model and write a run directory: config.json, model.safetensors,
    ema.safetensors, state.pt, log.jsonl, checkpoints/ and pictures. Data-parallel on N GPUs or CPU
    processes: torchrun --nproc-per-node N -m ddpmkit train ... (--batch-size is then the global
    batch, split over the processes; --resume works with any N).
    """
    p = command(sub, "train", add_parser)
    p.add_argument("--data", default="digits", help=data_help())
    p.add_argument("--out", type=Path, help="run directory to create (default: runs/<data>-<time>/)")
    p.add_argument("--resume", type=Path, metavar="DIR", help="continue the run in DIR from its newest complete checkpoint")
    add_overwrite(p)
    g = p.add_argument_group("diffusion")
    g.add_argument("--schedule", help=f"beta schedule: {', '.join(SCHEDULES)} (default cosine)")
    g.add_argument("--timesteps", type=int, help="T, the number of diffusion steps (default 1000)")
    g.add_argument("--beta-start", type=float, help="β_1 of the linear, quadratic or sigmoid schedule, e.g. 1e-4 "
                   "(default 1e-4 × 1000/T: Ho et al. 2020's ends scaled to keep the total noise at any T)")
    g.add_argument("--beta-end", type=float, help="β_T of the linear, quadratic or sigmoid schedule, e.g. 0.02 (default 0.02 × 1000/T)")
    g.add_argument("--prediction", help=f"network target: {', '.join(PREDICTIONS)} (default: the data's preset, v for 2-D points, eps for images)")
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
    g.add_argument("--groups", type=int, help="U-Net: GroupNorm groups, dividing every level's width (default 32, or "
                   "the largest divisor of a width below 32)")
    g = p.add_argument_group("data")
    g.add_argument("--num-points", type=int, help="2-D data: training points drawn once (default 20000)")
    g.add_argument("--toy-noise", type=float, metavar="SIGMA", help="2-D data: the generator's noise σ (scikit-learn's "
                   "noise of moons 0.05, circles 0.04, swiss-roll 0.4, s-curve 0.05; the std of 8gaussians 0.1; "
                   "checkerboard's jitter 0: the defaults)")
    g.add_argument("--image-size", help="images: SIZE or HEIGHTxWIDTH after resize and centre crop")
    g.add_argument("--channels", type=int, help="images: 1 (grey), 2 (grey+alpha), 3 (RGB) or 4 (RGBA); default from the data")
    g.add_argument("--holdout", type=float, help="images: share of the data kept out of training (a fixed seeded "
                   "split) for the held-out likelihood of evaluate --nll (default 0.1 for digits, 0 otherwise)")
    g.add_argument("--hflip", action=argparse.BooleanOptionalAction, default=None, help="random horizontal flips (default: on for folders)")
    g = p.add_argument_group("optimisation")
    length = g.add_mutually_exclusive_group()
    length.add_argument("--steps", type=int, help="optimiser steps")
    length.add_argument("--epochs", type=int, help="passes over the training set instead of --steps: ⌈epochs × "
                        "examples / --batch-size⌉ optimiser steps (the last batch of an epoch runs on into the next), "
                        "both kept in config.json; log.jsonl records the epoch of each step")
    g.add_argument("--batch-size", type=int, help="global batch: examples per optimiser step, summed over all "
                   "torchrun processes and --grad-accum micro-batches")
    g.add_argument("--lr", type=float, help="peak learning rate (AdamW)")
    g.add_argument("--weight-decay", type=float, help="AdamW weight decay")
    g.add_argument("--warmup-steps", type=int, help="linear LR warm-up steps")
    g.add_argument("--lr-decay", help=f"after warm-up: {', '.join(LR_DECAYS)}")
    g.add_argument("--grad-clip", type=float, help="max gradient norm (0 disables)")
    g.add_argument("--ema-decay", type=float, help="EMA decay per step, in [0, 1)")
    g.add_argument("--ema-sigma-rel", type=float, metavar="S",
                   help="make the EMA the power-function one of relative width S in (0, 0.2887), a share of the "
                        "training length (Karras et al. 2024), instead of --ema-decay; 0: --ema-decay (default: 0.2 "
                        "for digits, 0 otherwise; --ema-decay alone sets 0)")
    g.add_argument("--posthoc-ema", nargs="?", const=DEFAULT_SIGMA_RELS, type=_floats, metavar="S,S",
                   help="also keep power-function EMA profiles of these relative widths σ_rel (default "
                   f"{','.join(f'{s:g}' for s in DEFAULT_SIGMA_RELS)}) and their snapshots in posthoc/, from which "
                   "`ddpmkit ema` rebuilds the EMA of any width after training (Karras et al. 2024); the classic EMA "
                   "stays the run's ema.safetensors")
    g.add_argument("--posthoc-every", type=int, help="steps between post-hoc EMA snapshots (default: a twentieth of "
                   "--steps; each snapshot is one file per profile, the size of model.safetensors)")
    g.add_argument("--guide-at", type=float, metavar="F", help="keep the EMA weights at this share of the steps as "
                   "RUN/guide.safetensors, the guide of autoguidance (sample --autoguide auto; default 0.5 for the digits, "
                   "0 (none kept) otherwise)")
    g.add_argument("--guide-width", type=int, metavar="W", help="also train the paper's reduced-capacity guide beside the "
                   "network, in the same loop on the same batches: the network at the smaller width W (below --width: the "
                   "MLP's hidden width, the U-Net's base width) until --guide-at of the steps (all of them at --guide-at 0); "
                   "its EMA there is RUN/guide.safetensors instead of the main EMA (default 0: off; its cost: docs/guidance.md)")
    add_grad_accum(g)
    g.add_argument("--workers", type=int, help="data-loader worker processes")
    g.add_argument("--seed", type=int, help="seed for weights, batch order, t and noise (default 0)")
    g = p.add_argument_group("speed and memory")
    add_precision(g, "auto for digits, fp32 otherwise")
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
    g.add_argument("--device", help=DEVICE_HELP)
    add_progress(g)
    g = p.add_argument_group("watching a run")
    add_logger(g)
    g.add_argument("--eval-every", type=int, help="steps between sample-quality measurements of the EMA weights "
                   "(dpm++sde, 20 steps; images: own-feature FD, KID, precision/recall; 2-D: MMD², sliced Wasserstein), "
                   "written to log.jsonl; the best step's weights are kept in RUN/best/ (0, the default: off)")
    g.add_argument("--eval-samples", type=int, help="samples per measurement (default 1000 images or 2000 points)")


# U-Net options: CLI option -> (UNetConfig field, how its text becomes the value; None: as parsed)
UNET_FIELDS = {
    "channel_mults": ("channel_mults", sizes),
    "blocks_per_level": ("blocks_per_level", None),
    "block": ("block", None),
    "attention_res": ("attention_resolutions", sizes),
    "linear_attention_res": ("linear_attention_resolutions", sizes),
    "heads": ("attention_heads", None),
    "dropout": ("dropout", None),
    "groups": ("groups", None),
}
assert set(UNET_FIELDS) == set(UNET_OPTIONS)


def _given(args, options) -> set[str]:
    """Those of `options` the command line set (a zero --holdout holds nothing out: not given)."""
    return {o for o in options if getattr(args, o, None) is not None and not (o == "holdout" and not args.holdout)}


def _with_options(config: RunConfig, args, options) -> RunConfig:
    """`config` with those of `options` (TRAIN_OPTIONS names) that were given applied."""
    modality_for(config.data).refuse_options(_given(args, options))
    changes: dict[str, dict] = {name: {} for name in ("data", "diffusion", "train", "net")}
    for option in options:
        if getattr(args, option) is not None:
            section, field = TRAIN_OPTIONS[option]
            value = getattr(args, option)
            changes[section][field] = tuple(dict.fromkeys(value)) if option == "logger" else value
    if getattr(args, "steps", None) is not None:
        changes["train"]["epochs"] = None  # the steps asked for, not those of the preset's (or a resumed run's) epochs
    return dataclasses.replace(config, **{name: dataclasses.replace(getattr(config, name), **c) for name, c in changes.items() if c})


def config_from_args(args) -> RunConfig:
    """The preset of --data with every option given applied, checked as far as it can be
    before the data are read (the U-Net's level sizes against --image-size)."""
    from ..api import default_config

    kind = modality_for(args.data)
    kind.refuse_options(_given(args, (*TRAIN_OPTIONS, *UNET_OPTIONS)))
    config = _with_options(default_config(args.data), args, TRAIN_OPTIONS)
    new = {name: getattr(config, name) for name in ("data", "diffusion", "train")}
    if args.ema_decay is not None and args.ema_sigma_rel is None:  # --ema-decay asks for the classic EMA
        new["train"] = dataclasses.replace(new["train"], ema_sigma_rel=0.0)
    if args.image_size is not None:
        new["data"] = dataclasses.replace(new["data"], image_size=parse_image_size(args.image_size))
    net = config.net if args.net is None else kind.network(args.net)()
    if isinstance(net, GatedMLPConfig):
        net = dataclasses.replace(net, num_steps=new["diffusion"].num_steps)
    if args.width is not None:
        net = dataclasses.replace(net, **{WIDTH_FIELDS[type(net)]: args.width})
    unet = {field: getattr(args, option) if parse is None else parse(getattr(args, option), option)
            for option, (field, parse) in UNET_FIELDS.items() if getattr(args, option) is not None}
    if unet:  # image data (2-D data refused them above)
        # the level sizes (and what divides them) depend on the image size: validate against the real one
        size = new["data"].image_size or ((8, 8) if args.data == "digits" else None)
        sized = [o for o in ("channel_mults", "attention_res", "linear_attention_res") if getattr(args, o) is not None]
        if size is None and sized:
            names = ", ".join("--" + o.replace("_", "-") for o in sized)
            raise UserError(f"{names} need --image-size: the U-Net's level sizes depend on it")
        if size is not None:
            unet["image_size"] = min(size)
            if args.channel_mults is None:  # the preset's levels, trimmed to the size as build.resolve_config will
                unet["channel_mults"] = plan_levels(net.channel_mults, *size)
            _fit_preset_attention(net, unet, min(size))
    net = dataclasses.replace(net, **unet)
    if args.groups is not None:
        _check_groups(net)
    seed = config.seed if args.seed is None else args.seed
    config = dataclasses.replace(config, net=net, seed=seed, conditional=bool(args.conditional), **new)
    config.guide_config()  # --guide-width against the network's width, before anything is written
    return config


def _fit_preset_attention(net, unet: dict, side: int) -> None:
    """The preset's attention sizes that the options did not set, fitted to the levels the
    options make (modality.fit_attention: moved to the nearest free level or dropped, said in
    one line); the sizes given are checked as they are, by UNetConfig."""
    mults = unet.get("channel_mults", net.channel_mults)
    given = set(unet.get("attention_resolutions", ())) | set(unet.get("linear_attention_resolutions", ()))
    free = [side // 2**i for i in range(len(mults)) if side // 2**i not in given]
    full = () if "attention_resolutions" in unet else net.attention_resolutions
    linear = () if "linear_attention_resolutions" in unet else net.linear_attention_resolutions
    full, linear = fit_attention(full, linear, free, print)
    if "attention_resolutions" not in unet:
        unet["attention_resolutions"] = full
    if "linear_attention_resolutions" not in unet:
        unet["linear_attention_resolutions"] = linear


def _check_groups(net) -> None:
    """--groups must divide every level's width (GroupNorm splits the channels into equal groups)."""
    for i, mult in enumerate(net.channel_mults):
        width = net.base_width * mult
        if width % net.groups:
            divisors = [g for g in range(1, width + 1) if width % g == 0 and g <= 64][-3:]
            raise UserError(f"--groups {net.groups} does not divide the U-Net's width {width} at level {i} "
                            f"(--width {net.base_width} × mult {mult}); GroupNorm needs groups dividing every width, "
                            f"e.g. {', '.join(map(str, divisors))}")


def run(args) -> int:
    from ..api import train

    world = world_from_env()  # torchrun's processes, read from the environment; only rank 0 prints
    say = print if world.is_main else lambda message: None
    if args.resume is not None:
        given = sorted(o for o in (*TRAIN_OPTIONS, *UNET_OPTIONS, "net", "width", "image_size", "seed", "conditional")
                       if getattr(args, o) is not None and o not in RESUMABLE)
        if given:
            raise UserError(f"--resume continues a run with its own config.json; drop {', '.join('--' + g.replace('_', '-') for g in given)}")
        if args.out is not None and args.out != args.resume:
            raise UserError("--resume writes into the run it continues; drop --out")
        if args.overwrite:
            raise UserError("--resume continues the run it names and replaces nothing; drop --overwrite")
        if not (args.resume / "config.json").is_file():
            raise UserError(f"{args.resume} is not a ddpmkit run (no config.json); pass the directory ddpmkit train wrote")
        config = _with_options(RunConfig.load(args.resume / "config.json"), args, RESUMABLE)
        out = args.resume
        check_writable(out, "--resume")
    else:
        config = config_from_args(args)
        if args.out is None and world.active:
            raise UserError("under torchrun pass --out DIR: every process must name the same run directory")
        out = args.out or Path("runs") / f"{Path(args.data).stem or 'data'}-{time.strftime('%Y%m%d-%H%M%S')}"
        replaces = claim_run_directory(out, overwrite=args.overwrite).replaces  # before any data are loaded
    args.training_into = out  # for the error boundary's word on what is on disk (cli/__init__.py)
    result = train(config, out, device=args.device, resume=args.resume is not None, report=say, progress=not args.no_progress,
                   overwrite=args.resume is None and args.overwrite)
    best = (f"; best quality at step {result.best['step']:,}: {quality_text(result.best)}, weights in {out}/best/"
            if result.best else "")
    steps = f"{result.trained} steps" + (f" (steps {result.first_step} to {result.steps})" if result.first_step else "")
    if config.train.epochs is not None:
        steps += f" of {config.train.epochs} epochs"
    replaced = " (its earlier contents replaced: --overwrite)" if args.resume is None and replaces else ""
    say(f"trained {steps} in {result.seconds:.1f} s (final loss {result.final_loss:.4f}){best}; run directory: {out}{replaced}")
    if result.pictures:
        say(f"wrote {', '.join(result.pictures)} in {out}; next: ddpmkit sample --run {out}")
    return 0
