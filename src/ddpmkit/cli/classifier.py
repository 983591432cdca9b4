"""`ddpmkit train-classifier`: the noise-aware classifier of classifier guidance, its options and
the call of the API."""

from __future__ import annotations

import time

from ..classifier import ClassifierTraining, format_accuracy
from ..rundir import CLASSIFIER
from .options import DEVICE_HELP, command, sizes

DEFAULTS = ClassifierTraining()


def add_train_classifier(sub) -> None:
    """train a noise-aware classifier of a run's labels for classifier guidance

    Train p(y | x_t, t) (Dhariwal & Nichol 2021): the encoder half of a U-Net with its time
    embedding (by default the run's own U-Net shape) and a mean-pooling head, on the run's
    labelled training images noised to a uniformly drawn t. Writes RUN/classifier/ (weights,
    config.json, accuracy.json) and prints its accuracy on held-out images at t = 0, T/4, T/2
    and 3T/4. Then `ddpmkit sample --run RUN --class K --classifier-scale S` guides even an
    unconditional run towards class K. The defaults take about a minute for the digits on a CPU.
    """
    p = command(sub, "train-classifier", add_train_classifier, run=True)
    p.add_argument("--steps", type=int, default=DEFAULTS.steps, help="optimiser steps")
    p.add_argument("--batch-size", type=int, default=DEFAULTS.batch_size, help="images per step")
    p.add_argument("--lr", type=float, default=DEFAULTS.lr, help="peak AdamW learning rate (cosine decay to 0)")
    p.add_argument("--weight-decay", type=float, default=DEFAULTS.weight_decay, help="AdamW weight decay")
    p.add_argument("--seed", type=int, default=DEFAULTS.seed, help="seed of the weights, batches, t and noise")
    p.add_argument("--holdout", type=float, default=DEFAULTS.holdout, help="share of the training images the accuracy "
                   "is measured on when the run held none out (a run trained with --holdout is measured on its own)")
    p.add_argument("--width", type=int, help="channels of the first level (default: the run's U-Net's)")
    p.add_argument("--channel-mults", help="comma-separated width multipliers per level (default: the run's U-Net's)")
    p.add_argument("--blocks-per-level", type=int, help="residual blocks per level (default: the run's U-Net's)")
    p.add_argument("--dropout", type=float, default=0.0, help="drop probability inside each block")
    p.add_argument("--device", help=DEVICE_HELP)


def run_train_classifier(args) -> int:
    from ..api import train_classifier

    settings = ClassifierTraining(steps=args.steps, batch_size=args.batch_size, lr=args.lr, weight_decay=args.weight_decay,
                                  seed=args.seed, holdout=args.holdout)
    given = {"base_width": args.width, "blocks_per_level": args.blocks_per_level, "dropout": args.dropout,
             "channel_mults": None if args.channel_mults is None else sizes(args.channel_mults, "channel_mults")}
    started = time.perf_counter()
    record = train_classifier(args.run, settings, net_options={k: v for k, v in given.items() if v is not None},
                              device=args.device, report=print)
    for line in format_accuracy(record):
        print(line)
    print(f"{time.perf_counter() - started:.1f} s; wrote {args.run / CLASSIFIER}/ (classifier.safetensors, config.json, "
          f"accuracy.json); sample with --class K --classifier-scale S")
    return 0
