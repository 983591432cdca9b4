"""The only place that maps names (strings) to objects and assembles them: the network,
schedule and denoisers of a RunConfig, the config resolved against its data, the parts a
Trainer takes (loggers, the training model, augmentation, post-hoc EMA profiles), and runs
rebuilt from their directory."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import torch
from torch import nn

from . import checkpoint, classifier
from ._tensor import append_dims
from .config import RunConfig
from .denoiser import Denoiser, for_sampling
from .distributed import World
from .errors import UserError
from .loggers import Loggers, TensorBoard, WandB
from .modality import Images, Points, modality_for
from .nets.mlp import MLP, GatedMLP, GatedMLPConfig, MLPConfig
from .nets.unet import UNet, UNetConfig
from .posthoc_ema import PowerEMA, reconstruct
from .precision import Autocast, autocast_dtype
from .rundir import CONFIG, GUIDE, read_distill_record
from .guidance import AUTO, Guide
from .sampling import FixedGrid, Run, SamplingRequest
from .schedules import NoiseSchedule

NETS: dict[type, type[nn.Module]] = {MLPConfig: MLP, GatedMLPConfig: GatedMLP, UNetConfig: UNet}
LOGGERS = {"tensorboard": TensorBoard, "wandb": WandB}  # config.train.loggers names


def loggers(config: RunConfig, run_dir: Path) -> Loggers:
    """The loggers config.train.loggers names, writing into run_dir once started (a missing
    package is a UserError naming its extra, raised here, before anything is written)."""
    return Loggers([LOGGERS[name](Path(run_dir)) for name in config.train.loggers])


def modality(config: RunConfig) -> Points | Images:
    """The modality of a run (see modality.modality_for)."""
    return modality_for(config.data)


def resolve_config(config: RunConfig, data, report=lambda message: None, num_examples: int | None = None) -> RunConfig:
    """`config` with the data's resolved DataConfig (`data`: size, channels, classes, the 2-D
    normalisation) and the network's data-dependent sizes set from it: inputs and outputs
    (twice the channels with a learned variance), image size, classes, the U-Net's level plan
    (said through `report` when the size trims it); with `num_examples` (the training set's
    size), the steps of --epochs (TrainConfig.steps_for)."""
    if config.conditional and data.num_classes == 0:
        raise UserError(
            f"--conditional needs class labels, and {data.name} has none; use labelled data "
            "(digits, sub-folders of images, an .npz with labels, moons, circles or 8gaussians) or drop --conditional"
        )
    classes = data.num_classes if config.conditional else 0
    outputs = 2 if config.diffusion.variance == "learned_range" else 1  # mean and variance
    net = modality_for(data).fit_net(config.net, outputs, classes, report)
    train = config.train
    if train.epochs is not None and num_examples is not None:
        train = dataclasses.replace(train, steps=train.steps_for(num_examples))
    return dataclasses.replace(config, data=data, net=net, train=train)


def build_net(config: RunConfig) -> nn.Module:
    """The network of a config, its initial weights drawn from the run's seed."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        return NETS[type(config.net)](config.net)


def build_schedule(config: RunConfig) -> NoiseSchedule:
    return NoiseSchedule.from_config(config.diffusion)


def build_denoiser(config: RunConfig, net: nn.Module) -> Denoiser:
    """The network as x̂_0 and ε̂ for the run's prediction and variance."""
    return Denoiser(net, build_schedule(config), config.diffusion.prediction, config.diffusion.variance)


def make_run(directory: Path, config: RunConfig, net: nn.Module, fixed: FixedGrid | None = None) -> Run:
    """A Run of `net` (put in eval mode): its modality, its denoiser, the denoiser a sampler
    gets by default (no guidance, the modality's clipping) and, for a distilled run, its fixed grid."""
    kind = modality(config)
    base = build_denoiser(config, net.eval())
    return Run(Path(directory), config, net, kind, base, for_sampling(base, config.num_classes, 0.0, kind.default_clip), fixed=fixed)


def fixed_grid(run_dir: Path) -> FixedGrid | None:
    """The sampler and step grid recorded in a distilled run's distill.json (None: not distilled)."""
    record = read_distill_record(run_dir)
    if record is None:
        return None
    return FixedGrid(record["sampler"], tuple(int(t) for t in record["grid"]))


WEIGHTS = ("best", "last", "ema", "model")  # --weights names (or a path)


def weights_file(run_dir: Path, weights: str) -> Path:
    """The weights file `--weights` names: best (the EMA weights of the step --eval-every
    measured best, RUN/best/step-N/), last or ema (the EMA weights of the newest checkpoint, the
    default), model (its live, non-averaged weights), or the path of a .safetensors file (a
    checkpoint folder: its EMA weights)."""
    run_dir = Path(run_dir)
    if weights == "best":
        found = checkpoint.best_checkpoint(run_dir)
        if found is None:
            raise UserError(f"{run_dir} has no best/ weights: they are kept by training with --eval-every N; "
                            "use --weights last, or train (or resume) with --eval-every")
        return found / "ema.safetensors"
    if weights in ("last", "ema"):
        return run_dir / "ema.safetensors"
    if weights == "model":
        return run_dir / "model.safetensors"
    path = Path(weights)
    if path.is_dir():
        path = path / "ema.safetensors"
    if path.suffix != ".safetensors" or not path.is_file():
        raise UserError(f"--weights {weights!r} is neither {', '.join(WEIGHTS)} nor a .safetensors file (or a checkpoint "
                        "folder holding ema.safetensors)")
    return path


def run_config(run_dir: Path) -> RunConfig:
    """The RunConfig of a run directory, with a clear error for a folder that is none."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UserError(f"run directory {run_dir} does not exist; pass the --out directory of a finished training run")
    config_path = run_dir / CONFIG
    if not config_path.is_file():
        raise UserError(f"{run_dir} has no config.json, so it is not a ddpmkit run; pass the --out directory of ddpmkit train")
    return RunConfig.load(config_path)


def load_run(run_dir: Path, weights: str = "ema", device: torch.device | None = None, *, ema: bool | None = None) -> Run:
    """Rebuild a run's network from config.json and load the weights `weights` names
    (weights_file); `ema` True / False is the older spelling of weights "ema" / "model"."""
    if ema is not None:
        weights = "ema" if ema else "model"
    run_dir = Path(run_dir)
    config = run_config(run_dir)
    net = build_net(config)
    path = weights_file(run_dir, weights)
    checkpoint.load_matching(net, checkpoint.load_weights(path), path)
    net = net.to(device or torch.device("cpu")).eval().requires_grad_(False)
    return make_run(run_dir, config, net, fixed_grid(run_dir))


def load_for(run_dir: Path, request: SamplingRequest, device: torch.device | None = None) -> Run:
    """The run as `request` needs it: the weights it names, the guide of autoguidance it names, and the run's classifier when classifier guidance or classes of an
    unconditional run ask for it (one line when the run has none)."""
    run = load_run(run_dir, request.weights, device)
    guide = request.guide_name()
    if guide is not None:
        run = load_guide(run, guide)
    if not request.needs_classifier(run.config):
        return run
    return with_classifier(run, "--classifier-scale needs the run's classifier" if request.guidance.classifier else
                           "--class needs a conditional model; this run was trained without --conditional and has no classifier")


GUIDE_NAMES = "auto, step-N, posthoc:SIGMA_REL[@N], a run directory or a .safetensors file"
FITS = (  # what a guide must share with the main model, each as (what, its value in a RunConfig)
    ("data", lambda c: c.data.name), ("image size", lambda c: c.data.image_size), ("channels", lambda c: c.data.channels),
    ("2-D normalisation", lambda c: (c.data.mean, c.data.scale)), ("classes", lambda c: c.num_classes),
    ("T", lambda c: c.diffusion.num_steps),
    ("schedule", lambda c: (c.diffusion.schedule, c.diffusion.beta_start, c.diffusion.beta_end)),
    ("prediction", lambda c: c.diffusion.prediction),
)


def check_guide_fits(config: RunConfig, guide: RunConfig, where: Path) -> None:
    """One line naming what differs when the guide's run does not share the main run's data, T,
    schedule, prediction or shape (a guide must denoise the same x_t as the main model)."""
    differ = [f"{what} {f(guide)!r} against {f(config)!r}" for what, f in FITS if f(guide) != f(config)]
    if differ:
        raise UserError(f"--autoguide {where} does not fit this run: its {'; '.join(differ)}; a guide needs the same data, "
                        "T, schedule, prediction and shape (train it with the main run's options, e.g. a narrower --width)")


def load_guide(run: Run, name: str) -> Run:
    """The run with the guide of autoguidance (Karras et al. 2024) that `name` names, on its device:
    "auto": RUN/guide.safetensors (the EMA weights at TrainConfig.guide_at of the steps; with
      TrainConfig.guide_width, those of the narrow guide trained beside the run, its network RunConfig.guide_config);
    "step-N": the EMA weights of the run's checkpoint of step N;
    "posthoc:S" or "posthoc:S@N": the power-function EMA of relative width S rebuilt from the run's
      post-hoc EMA snapshots (posthoc_ema.reconstruct), at its last snapshot or the last at or before step N;
    a run directory: that run's EMA weights (with its own network: it may be narrower), after the
      check that it fits (check_guide_fits); a .safetensors file: weights of the run's own network."""
    config, where, text = run.config, run.directory, str(name).strip()
    step = re.fullmatch(r"step-0*(\d+)", text)
    posthoc = re.fullmatch(r"posthoc:([0-9.eE+-]+)(?:@(\d+))?", text)
    weights: dict[str, torch.Tensor] | None = None
    if text == AUTO:
        path = where / GUIDE
        if not path.is_file():
            raise UserError(f"{where} keeps no guide ({GUIDE}): runs trained with --guide-at F keep the EMA weights at that "
                            f"fraction of their steps; name another guide ({GUIDE_NAMES}) or use --autoguide none")
        kept_at = checkpoint.weights_metadata(path).get("step", "?")
        if config.train.guide_width:  # the narrow guide trained beside the run: its network at that width
            config = config.guide_config()
            source = f"{path} (the EMA weights at step {kept_at} of the width-{config.width} guide trained beside the run)"
        else:
            source = f"{path} (the EMA weights at step {kept_at})"
    elif step:
        path = checkpoint.step_dir(where, int(step.group(1))) / "ema.safetensors"
        if not path.is_file():
            kept = ", ".join(f"step-{checkpoint.checkpoint_step(p)}" for p in checkpoint.complete_checkpoints(where)) or "none"
            raise UserError(f"--autoguide {text}: {where} has no checkpoint of step {step.group(1)} (kept: {kept}); "
                            "train with --checkpoint-every N --keep K to keep earlier ones")
        source = f"{path} (the EMA weights of the checkpoint of step {step.group(1)})"
    elif posthoc:
        try:
            sigma_rel = float(posthoc.group(1))
        except ValueError:
            raise UserError(f"--autoguide {text}: posthoc: takes a relative EMA width, e.g. posthoc:0.05 or posthoc:0.05@500") from None
        until = int(posthoc.group(2)) if posthoc.group(2) else None
        snaps = [s for s in checkpoint.snapshots(where) if until is None or s.step <= until]
        if not snaps:
            raise UserError(f"--autoguide {text}: {where} has no post-hoc EMA snapshots" + (f" at or before step {until}" if until
                            else "") + "; train with --posthoc-ema to keep them")
        built = reconstruct(snaps, [sigma_rel], checkpoint.load_weights)[0]
        weights, path = built.weights, where
        source = f"post-hoc EMA σ_rel {sigma_rel:g} at step {built.step}, rebuilt from {len(snaps)} snapshots of {where}"
    elif Path(text).is_dir():
        config = run_config(Path(text))
        check_guide_fits(run.config, config, Path(text))
        path = weights_file(Path(text), "ema")
        source = f"{path} (the EMA weights of the run {text})"
    elif text.endswith(".safetensors") and Path(text).is_file():
        path = Path(text)
        source = f"{path} (weights of this run's network)"
    else:
        raise UserError(f"--autoguide {text!r} names no guide: it takes {GUIDE_NAMES} (or none)")
    net = build_net(config)
    checkpoint.load_matching(net, weights if weights is not None else checkpoint.load_weights(path), path)
    net = net.to(run.device).eval().requires_grad_(False)
    return dataclasses.replace(run, guide=Guide(text, build_denoiser(config, net), source))


def with_classifier(run: Run, missing: str = "classifier guidance needs the run's classifier") -> Run:
    """The run with its noise-aware classifier (RUN/classifier/, classifier.load) on its device,
    what classifier guidance samples with; `missing` begins the error of a run without one."""
    return dataclasses.replace(run, classifier=classifier.load(run.directory, run.config, run.device, missing=missing))


class HFlip:
    """Flip each image left-right with probability 1/2 (an Augmentation: the coin flips
    are drawn for the global batch, each rank applies its rows)."""

    def draw(self, n: int, generator: torch.Generator) -> torch.Tensor:
        return torch.rand(n, generator=generator) < 0.5  # [n] bool

    def __call__(self, x: torch.Tensor, flip: torch.Tensor) -> torch.Tensor:
        return torch.where(append_dims(flip.to(x.device), x.ndim), x.flip(-1), x)


def posthoc_profiles(config: RunConfig, net: nn.Module) -> PowerEMA | None:
    """The post-hoc EMA profiles --posthoc-ema asks for (None: off)."""
    return PowerEMA(net, config.train.posthoc_ema) if config.train.posthoc_ema else None


def training_model(net: nn.Module, config: RunConfig, device: torch.device, world: World) -> nn.Module:
    """What the loss calls: `net` under autocast, data-parallel and compiled, as the config asks."""
    dtype = autocast_dtype(config.train.precision, device)
    model: nn.Module = net if dtype is None else Autocast(net, device.type, dtype)
    if world.active:
        from torch.nn.parallel import DistributedDataParallel

        model = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    if config.train.compile:
        model = torch.compile(model)
    return model
