"""`ddpmkit distill`: its options and the call of the API."""

from __future__ import annotations

import time
from pathlib import Path

from ..distributed import world_from_env
from ..errors import UserError
from .options import DEVICE_HELP, add_grad_accum, add_logger, add_overwrite, add_precision, add_progress, add_run, command

DISTILL_OPTIONS = ("to_steps", "start_steps", "rounds_steps", "batch_size", "lr", "seed", "checkpoint_every", "grad_accum",
                   "precision", "logger", "autoguide", "autoguide_scale")
SETTINGS_FIELDS = {"logger": "loggers"}  # option dest -> DistillSettings field where they differ


def add_distill(sub) -> None:
    """distil a run into a few-step sampler (progressive distillation)

    Progressive distillation (Salimans & Ho 2022): the run's deterministic DDIM sampler on
    --start-steps steps is distilled into students that each take half the steps of their
    teacher, round after round, down to --to-steps. OUT is a run directory: `ddpmkit sample --run
    OUT` draws with DDIM on its recorded grid of --to-steps steps, and evaluate and export take it.
    Running the same command again, or --resume OUT, continues an interrupted distillation from
    its newest checkpoint (one per round and every --checkpoint-every steps). Each round runs on
    the training loop of `ddpmkit train`: data-parallel under torchrun (torchrun --standalone
    --nproc-per-node N -m ddpmkit distill --run-dir RUN --out OUT ...; --batch-size is the global
    batch), with --precision, --grad-accum and --logger as for train.
    """
    p = command(sub, "distill", add_distill)
    add_run(p, "the run directory to distil (its EMA weights are the first teacher)", torchrun=True)
    p.add_argument("--out", type=Path, help="the distilled run directory to write (new or empty)")
    p.add_argument("--resume", type=Path, metavar="OUT", help="continue the distillation in OUT with its own settings")
    p.add_argument("--to-steps", type=int, help="the last student's sampling steps (default 4)")
    p.add_argument("--start-steps", type=int, help="the first teacher's DDIM steps: --to-steps times a power of two (default 64)")
    p.add_argument("--rounds-steps", type=int, help="optimiser steps per round, i.e. per halving (default 1000)")
    p.add_argument("--batch-size", type=int, help="examples per step, over all processes and micro-batches "
                   "(default: the run's)")
    p.add_argument("--lr", type=float, help="peak learning rate, annealed linearly to 0 in each round (default 5e-4)")
    p.add_argument("--seed", type=int, help="seed of the batch order, t and the noise (default 0)")
    p.add_argument("--checkpoint-every", type=int, help="steps between checkpoints inside a round (default 250)")
    add_grad_accum(p)
    add_precision(p, "fp32")
    add_logger(p)
    add_overwrite(p)
    p.add_argument("--autoguide", metavar="GUIDE", help="distil the teacher autoguided by GUIDE (Karras et al. 2024; as "
                   "sample --autoguide: auto, step-N, posthoc:S[@N], a run directory or a .safetensors file; default: unguided)")
    p.add_argument("--autoguide-scale", type=float, metavar="W", help="the guided teacher's W (default 2)")
    p.add_argument("--device", help=DEVICE_HELP)
    add_progress(p)


def run_distill(args) -> int:
    from ..api import distill
    from ..training.distill import DistillSettings

    world = world_from_env()  # torchrun's processes, read from the environment; only rank 0 prints
    say = print if world.is_main else lambda message: None
    given = {k: getattr(args, k) for k in DISTILL_OPTIONS if getattr(args, k) is not None}
    if args.resume is not None:
        extra = [f"--{k.replace('_', '-')}" for k in given] + [o for o, v in (("--run", args.run),) if v is not None]
        if extra:
            raise UserError(f"--resume continues a distillation with its own teacher and settings; drop {', '.join(extra)}")
        if args.out is not None and args.out != args.resume:
            raise UserError("--resume writes into the distillation it continues; drop --out")
        out, settings = args.resume, DistillSettings()
    else:
        if args.run is None or args.out is None:
            raise UserError("distill needs --run RUN (the run to distil) and --out OUT (or --resume OUT)")
        if "logger" in given:
            given["logger"] = tuple(dict.fromkeys(given["logger"]))
        out, settings = args.out, DistillSettings(**{SETTINGS_FIELDS.get(k, k): v for k, v in given.items()})
    args.training_into = out  # for the error boundary's word on what is on disk (cli/__init__.py)
    started = time.perf_counter()
    rounds = distill(args.run, out, settings, resume=args.resume is not None, device=args.device, report=say,
                     progress=not args.no_progress, overwrite=args.overwrite)
    for r in rounds:
        say(f"round {r['round']}: {r['teacher_steps']} -> {r['student_steps']} steps, {r['steps']} steps in "
            f"{r['seconds']:.0f} s, final loss {r['final_loss']:.4f}")
    last = rounds[-1]["student_steps"] if rounds else settings.to_steps
    say(f"wrote the {last}-step student to {out} in {time.perf_counter() - started:.0f} s; "
        f"ddpmkit sample --run {out} draws with ddim on its {last} steps")
    return 0
