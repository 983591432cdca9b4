"""The frozen dataclasses a run is made of, their validation, and their JSON round trip.

`config.json` in a run directory is `RunConfig.to_json()`: everything needed to
rebuild the network and the schedule without the training data.
"""

from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

from .denoiser import PREDICTIONS, VARIANCES, Prediction, Variance
from .errors import UserError, check_between, check_choice, check_finite_fields, check_not_negative, check_positive
from .losses import LOSSES, LossType
from .nets.mlp import GatedMLPConfig, MLPConfig
from .nets.unet import UNetConfig
from .posthoc_ema import check_sigma_rel
from .schedules import SCHEDULES, ScheduleName, beta_range

NetConfig = MLPConfig | GatedMLPConfig | UNetConfig
NET_KINDS: dict[str, type] = {"mlp": MLPConfig, "gated-mlp": GatedMLPConfig, "unet": UNetConfig}
# each network's width, the field --width and --guide-width set: the MLPs' hidden width, the U-Net's base width
WIDTH_FIELDS: dict[type, str] = {MLPConfig: "hidden", GatedMLPConfig: "hidden", UNetConfig: "base_width"}
LRDecay = Literal["constant", "cosine", "linear"]
LR_DECAYS: tuple[str, ...] = get_args(LRDecay)
Precision = Literal["fp32", "bf16", "fp16", "auto"]
PRECISIONS: tuple[str, ...] = get_args(Precision)
LoggerName = Literal["tensorboard", "wandb"]
LOGGERS: tuple[str, ...] = get_args(LoggerName)


@dataclass(frozen=True)
class DataConfig:
    name: str = "digits"  # a toy set name, "digits", an image folder, a .npy/.npz file or hf:NAME
    num_points: int = 20_000  # toy data: points drawn once for training
    image_size: tuple[int, int] | None = None  # images: (height, width) in px after resize and crop
    channels: int | None = None  # images: 1, 3 or 4
    hflip: bool = False  # images: random horizontal flips during training
    mean: tuple[float, ...] | None = None  # toy data: per-axis mean removed before training
    scale: float | None = None  # toy data: the scale divided out before training
    num_classes: int = 0  # classes in the data (0: unlabelled)
    holdout: float = 0.0  # images: share in [0, 1) kept out of training (a fixed seeded split), scored by evaluate --nll
    toy_noise: float | None = None  # toy data: the generator's noise σ (e.g. make_moons' noise); None: the set's own (data.toy.TOY_NOISE)

    def __post_init__(self) -> None:
        check_finite_fields(self, "data")
        check_positive("--num-points", self.num_points)
        if self.toy_noise is not None:
            check_not_negative("--toy-noise", self.toy_noise)
        check_between("--holdout", self.holdout, 0, 1, high_included=False, what="the share of images kept out of training")


@dataclass(frozen=True)
class DiffusionConfig:
    schedule: ScheduleName = "cosine"  # β schedule: linear, cosine, quadratic, sigmoid
    num_steps: int = 1000  # T, training timesteps
    prediction: Prediction = "eps"  # what the network outputs: eps, x0, v
    variance: Variance = "fixed_small"  # reverse variance: fixed_small (β̃), fixed_large (β), learned_range (hybrid loss)
    loss: LossType = "l2"  # l2, l1, huber
    min_snr_gamma: float = 0.0  # min-SNR-γ loss weighting (Hang et al. 2023; 5 is typical); 0: off
    beta_start: float | None = None  # β_1 of linear, quadratic, sigmoid; None: 1e-4 · 1000/T (Ho et al. 2020 scaled)
    beta_end: float | None = None  # β_T of linear, quadratic, sigmoid; None: 0.02 · 1000/T

    def __post_init__(self) -> None:
        check_finite_fields(self, "diffusion")
        check_not_negative("--min-snr-gamma", self.min_snr_gamma)
        check_choice("schedule", self.schedule, SCHEDULES)
        check_positive("the number of diffusion steps T (--timesteps)", self.num_steps)
        check_choice("prediction", self.prediction, PREDICTIONS)
        check_choice("variance", self.variance, VARIANCES)
        check_choice("loss", self.loss, LOSSES)
        beta_range(self.schedule, self.num_steps, self.beta_start, self.beta_end)  # one line if the ends do not fit


def lr_factor(step: int, train) -> float:
    """Multiplier of the peak LR at optimiser step `step` of `train` (a TrainConfig, or anything
    with its steps, warmup_steps and lr_decay): linear warm-up, then constant, cosine decay to 0
    at the last step (Loshchilov & Hutter 2017), or linear decay to 0 (progressive distillation's
    rounds, Salimans & Ho 2022)."""
    if train.warmup_steps and step < train.warmup_steps:
        return (step + 1) / train.warmup_steps
    if train.lr_decay == "constant":
        return 1.0
    progress = (step - train.warmup_steps) / max(1, train.steps - train.warmup_steps)
    if train.lr_decay == "linear":
        return 1.0 - progress
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 3000  # optimiser steps (with `epochs`: the steps those epochs take, set once the data are read)
    epochs: int | None = None  # passes over the training set asked for (--epochs); None: `steps` was asked for
    batch_size: int = 256  # global batch: examples per optimiser step over all processes and grad_accum micro-batches
    lr: float = 1e-3  # peak learning rate of AdamW
    weight_decay: float = 0.0  # AdamW decoupled weight decay
    warmup_steps: int = 0  # linear learning-rate warm-up from 0, in steps
    lr_decay: LRDecay = "constant"  # after warm-up: constant, or cosine or linear (to 0 at the last step)
    grad_clip: float = 1.0  # max global gradient norm (0: no clipping)
    ema_decay: float = 0.999  # EMA decay per step, in [0, 1)
    ema_warmup: bool = True  # ramp the EMA decay as (1+n)/(10+n) early on
    ema_sigma_rel: float = 0.0  # > 0: the EMA is the power-function one of this relative width (Karras et al. 2024) instead of ema_decay
    grad_accum: int = 1  # micro-batches per optimiser step
    num_workers: int = 0  # data-loader worker processes (0: load in the main process)
    log_every: int = 100  # steps per log.jsonl record
    sample_every: int = 0  # steps between sample pictures (0: only at the end)
    checkpoint_every: int = 0  # steps between checkpoints (0: only at the end)
    keep: int = 3  # step checkpoints kept on disk
    max_nonfinite: int = 5  # consecutive non-finite steps that stop training
    p_uncond: float = 0.1  # conditional models: probability a label is replaced by the null label
    precision: Precision = "fp32"  # forward pass: fp32, bf16 autocast (CUDA, CPUs with bf16), fp16 autocast + loss scaling (CUDA), auto (bf16 where native, else fp32)
    compile: bool = False  # torch.compile the network for training
    loggers: tuple[LoggerName, ...] = ()  # where the log records also go: tensorboard, wandb (log.jsonl always)
    eval_every: int = 0  # steps between sample-quality measurements from the EMA weights (0: never)
    eval_samples: int | None = None  # samples per measurement (None: the modality's default, 1,000 images or 2,000 points)
    posthoc_ema: tuple[float, ...] = ()  # σ_rel of each power-function EMA profile kept for post-hoc EMA (Karras et al. 2024); (): off
    posthoc_every: int = 0  # steps between snapshots of those profiles in posthoc/ (0: a twentieth of --steps)
    guide_at: float = 0.0  # share of the steps in [0, 1) at which the EMA weights are kept as RUN/guide.safetensors,
    # autoguidance's guide (Karras et al. 2024); 0: none kept
    guide_width: int = 0  # > 0: also train the paper's reduced-capacity guide, the network at this smaller width W
    # (RunConfig.guide_config), beside it on the same batches until guide_step; its EMA there, not the main one's, is
    # RUN/guide.safetensors; 0: off

    def __post_init__(self) -> None:
        check_finite_fields(self, "train")
        if self.epochs is not None:
            check_positive("--epochs", self.epochs)
        for option, value in (("--steps", self.steps), ("--batch-size", self.batch_size), ("--grad-accum", self.grad_accum),
                              ("--log-every", self.log_every), ("--keep", self.keep), ("--max-nonfinite", self.max_nonfinite)):
            check_positive(option, value)
        check_positive("--lr", self.lr, integer=False)
        check_choice("lr decay (--lr-decay)", self.lr_decay, LR_DECAYS)
        check_choice("precision (--precision)", self.precision, PRECISIONS)
        if self.batch_size % self.grad_accum:
            raise UserError(f"--batch-size {self.batch_size} must be divisible by --grad-accum {self.grad_accum}")
        check_between("--p-uncond", self.p_uncond, 0, 1)
        check_between("--ema-decay", self.ema_decay, 0, 1, high_included=False)
        for name in ("weight_decay", "warmup_steps", "grad_clip", "num_workers", "sample_every", "checkpoint_every", "eval_every",
                     "posthoc_every"):
            check_not_negative(f"--{name.replace('_', '-')}", getattr(self, name))
        for name in self.loggers:
            check_choice("logger (--logger)", name, LOGGERS)
        if self.eval_samples is not None and self.eval_samples < 10:
            raise UserError(f"--eval-samples must be at least 10 (the quality measures need a few nearest neighbours), "
                            f"got {self.eval_samples}")
        check_between("--guide-at", self.guide_at, 0, 1, high_included=False, what="the share of the steps at which the guide is kept")
        check_not_negative("--guide-width", self.guide_width)  # below the network's width: RunConfig.guide_config
        if self.ema_sigma_rel:
            check_sigma_rel(self.ema_sigma_rel, "--ema-sigma-rel")
        for sigma_rel in self.posthoc_ema:
            check_sigma_rel(sigma_rel, "--posthoc-ema")
        if len({f"{s:.3f}" for s in self.posthoc_ema}) != len(self.posthoc_ema):
            raise UserError(f"--posthoc-ema takes distinct σ_rel (to 3 decimals), got {list(self.posthoc_ema)}")

    def steps_for(self, num_examples: int) -> int:
        """Optimiser steps of `epochs` passes over `num_examples` training examples:
        ⌈epochs · N / batch_size⌉, batch_size being the global batch (all processes and
        --grad-accum micro-batches together), so the world size does not change it. The batch
        order is one endless stream of per-epoch permutations (data.BatchStream), so a batch
        that straddles two epochs holds the end of one and the start of the next: rounding up,
        the last step takes the rest of the last epoch (and a few examples of the next)."""
        return math.ceil(self.epochs * num_examples / self.batch_size)

    @property
    def guide_step(self) -> int | None:
        """The step whose EMA weights are kept as autoguidance's guide: guide_at of the steps (at least 1), or with
        guide_width alone the last step (the narrow guide trains until this step); None: off."""
        if self.guide_at:
            return max(1, round(self.guide_at * self.steps))
        return self.steps if self.guide_width else None

    def guide_trains(self, step: int) -> bool:
        """Whether the narrow guide (guide_width) trains at optimiser step `step` (0-based): before guide_step."""
        return bool(self.guide_width) and step < self.guide_step

    def epoch_at(self, step: int, num_examples: int) -> float:
        """Epochs completed after `step` optimiser steps over `num_examples` examples: step · batch / N."""
        return step * self.batch_size / num_examples

    @property
    def snapshot_every(self) -> int:
        """Steps between post-hoc EMA snapshots: posthoc_every, or by default a twentieth of the steps."""
        return self.posthoc_every or max(1, self.steps // 20)


@dataclass(frozen=True)
class RunConfig:
    data: DataConfig = field(default_factory=DataConfig)
    net: NetConfig = field(default_factory=UNetConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    seed: int = 0  # seeds the weights, the batch order, t and ε
    conditional: bool = False  # class-conditional (classifier-free guidance) on the data's labels

    @property
    def num_classes(self) -> int:
        """Classes the network is conditioned on (0: unconditional)."""
        return self.net.num_classes

    @property
    def width(self) -> int:
        """The network's width (WIDTH_FIELDS): the MLPs' hidden width, the U-Net's base width."""
        return getattr(self.net, WIDTH_FIELDS[type(self.net)])

    def guide_config(self) -> RunConfig | None:
        """The run of the narrow guide train.guide_width asks for (None: none): this run with its network at width W,
        a smaller, weaker version of the main model, as the guide of autoguidance is (Karras et al. 2024: "a smaller,
        less-trained version of the model itself"); its own guide_width 0. W must lie below the network's width;
        the rest the narrower network's own config checks (the U-Net's attention heads must divide every level's width;
        its GroupNorm groups are clamped to a divisor of each width, as for any width). One line when W does not fit."""
        w = self.train.guide_width
        if not w:
            return None
        if w >= self.width:
            raise UserError(f"--guide-width {w} must be smaller than the network's width {self.width} (--width): the guide "
                            "is a narrower, weaker version of the main network (Karras et al. 2024)")
        try:
            net = dataclasses.replace(self.net, **{WIDTH_FIELDS[type(self.net)]: w})
        except UserError as e:
            raise UserError(f"--guide-width {w} does not make a network: {e}") from None
        return dataclasses.replace(self, net=net, train=dataclasses.replace(self.train, guide_width=0))

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        kind = next(k for k, cls in NET_KINDS.items() if isinstance(self.net, cls))
        d["net"] = {"kind": kind, **d["net"]}
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, allow_nan=False)  # the validators keep NaN and inf out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "RunConfig":
        """A RunConfig from its JSON form, every field checked against its declared type first (one
        UserError naming the field and the form it takes: `_value`), then by the dataclasses' own checks."""
        if not isinstance(d, dict):
            raise UserError(f"the config must be a JSON object of sections (data, net, diffusion, train), got {_shown(d)}")
        unknown = set(d) - {"data", "net", "diffusion", "train", "seed", "conditional"}
        if unknown:
            raise UserError(f"config has unknown sections {sorted(unknown)}; was it written by a newer ddpmkit?")
        for name in ("data", "net", "diffusion", "train"):
            if name not in d:
                raise UserError(f"config has no {name!r} section; restore it (config.json holds data, net, diffusion and train)")
            if not isinstance(d[name], dict):
                raise UserError(f"config section {name!r} must be a JSON object of its fields, got {_shown(d[name])}")
        net = dict(d["net"])
        kind = net.pop("kind", None)
        if kind not in NET_KINDS:
            raise UserError(f"config has an unknown network kind {kind!r}; expected one of: {', '.join(NET_KINDS)}")
        parts = {"data": DataConfig, "diffusion": DiffusionConfig, "train": TrainConfig}
        kwargs: dict[str, Any] = {name: _build(sub, d[name], name) for name, sub in parts.items()}
        kwargs["net"] = _build(NET_KINDS[kind], net, "net")
        top = {name: hint for name, hint in typing.get_type_hints(cls).items() if name in ("seed", "conditional")}
        return cls(**{name: _value(d[name], hint, name) for name, hint in top.items() if name in d}, **kwargs)

    @classmethod
    def from_json(cls, text: str) -> "RunConfig":
        return cls.from_dict(json.loads(text))

    @classmethod
    def load(cls, path: Path) -> "RunConfig":
        try:
            return cls.from_json(Path(path).read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise UserError(f"{path} is not a valid ddpmkit config ({e}); rebuild it or train again") from None
        except UserError as e:  # a field that does not fit: the line names the file too
            raise UserError(f"{path}: {e}") from None


def _build(cls: type, values: dict[str, Any], section: str) -> Any:
    """The dataclass `cls` from a config section's fields, each checked against its declared type."""
    hints = typing.get_type_hints(cls)
    unknown = set(values) - {f.name for f in dataclasses.fields(cls)}
    if unknown:
        raise UserError(f"config section {section!r} has unknown options {sorted(unknown)}")
    return cls(**{k: _value(v, hints[k], f"{section}.{k}") for k, v in values.items()})


def _value(value: Any, hint: Any, where: str) -> Any:
    """A JSON value as the field `where` of type `hint` takes it (lists become tuples, an integer
    stands for a float), or a UserError naming the field and the form it takes."""
    try:
        return _as(value, hint)
    except (TypeError, ValueError):
        raise UserError(f"config field {where} must be {_form(hint)}, got {_shown(value)}; fix config.json (or train again)") from None


def _as(value: Any, hint: Any) -> Any:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        for option in args:
            try:
                return _as(value, option)
            except (TypeError, ValueError):
                continue
        raise TypeError
    if hint is type(None):
        if value is not None:
            raise TypeError
        return None
    if origin is Literal:
        if value not in args:
            raise ValueError
        return value
    if origin is tuple:
        if not isinstance(value, (list, tuple)):  # JSON's list (a tuple from to_dict itself)
            raise TypeError
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_as(v, args[0]) for v in value)
        if len(value) != len(args):
            raise ValueError
        return tuple(_as(v, a) for v, a in zip(value, args))
    if hint is bool:
        if not isinstance(value, bool):
            raise TypeError
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise TypeError
        return value
    raise TypeError(f"no JSON form for {hint}")  # a field type this reader does not know: a bug, caught by the tests


def _form(hint: Any) -> str:
    """The JSON form of a field's type, in words: 'a list of 2 integers', 'one of "eps", "x0", "v"', ..."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_form(a) for a in args)
    if origin is Literal:
        return "one of " + ", ".join(json.dumps(a) for a in args)
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return f"a list of {_plural(args[0])}"
        return f"a list of {len(args)} {_plural(args[0])}" if len(set(args)) == 1 else f"a list of {len(args)} values"
    return {type(None): "null", bool: "true or false", int: "an integer", float: "a number", str: "a string"}.get(hint, str(hint))


def _plural(hint: Any) -> str:
    return {int: "integers", float: "numbers", str: "strings"}.get(hint, _form(hint) + " values")


def _shown(value: Any) -> str:
    """A JSON value as the user wrote it, cut short."""
    text = json.dumps(value)
    return text if len(text) <= 40 else text[:37] + "..."
