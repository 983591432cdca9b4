"""The diffusion objective (Algorithm 1 of Ho et al. 2020) and the Trainer of a RunConfig.

Notation: x_0 a micro-batch in model space, t ~ U{0, ..., T−1}, ε ~ N(0, I),
x_t = √ᾱ_t·x_0 + √(1−ᾱ_t)·ε; the loss compares the network's prediction (ε, x_0 or v,
through the one adapter, denoiser.py) with its target (losses.training_losses).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from .. import build, checkpoint, outputs, rundir
from ..config import RunConfig
from ..denoiser import Denoiser
from ..distributed import World
from ..evaluation.during import measure_quality_now
from ..evaluation.kinds import measures
from ..loggers import Loggers
from ..losses import training_losses
from ..nets.unet import count_parameters
from ..pictures import for_kind, step_picture_path
from ..precision import resolve as resolve_precision
from .guide import NarrowGuide
from .objective import Batch, TrainResult
from .trainer import Trainer


class DiffusionLoss:
    """The denoising loss of a run (an objective.Objective): per example a label dropped to the
    null label with probability p_uncond (conditional runs), t and ε, drawn in that order for
    the global micro-batch, and losses.training_losses through `denoiser`. With `guide` (the
    narrow guide's Denoiser, guide.NarrowGuide), the guide's loss on the same x_0, t, ε and label
    until train.guide_step: added as g − g.detach(), it leaves the recorded loss the main
    network's, bit for bit, and brings the guide's gradient into the one backward pass."""

    def __init__(self, config: RunConfig, denoiser: Denoiser, discrete: bool, guide: Denoiser | None = None):
        self.config, self.denoiser, self.discrete, self.guide = config, denoiser, discrete, guide
        self.num_classes = config.num_classes  # 0: unconditional

    def losses(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        d = self.config.diffusion
        label = batch.drop_labels(self.num_classes, self.config.train.p_uncond) if self.num_classes else None
        t = batch.randint(d.num_steps).to(batch.x0.device)  # [b]: line 3 of Algorithm 1
        noise = batch.randn()  # [b, ...]
        per_example = training_losses(self.denoiser, batch.x0, t, noise, d.loss, label, d.min_snr_gamma,
                                      discrete=self.discrete)
        if self.guide is not None and self.config.train.guide_trains(batch.step):
            g = training_losses(self.guide, batch.x0, t, noise, d.loss, label, d.min_snr_gamma, discrete=self.discrete)
            per_example = per_example + (g - g.detach())  # [b]: g − g is 0 for a finite g, NaN (a skipped step) if not
        return per_example, t

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass

    def files(self) -> dict:
        return {}


def trainer(config: RunConfig, run_dir: Path, world: World = World(), *, device: torch.device = torch.device("cpu"),
            report=lambda message: None, progress: bool = True) -> tuple[Trainer, RunConfig, object]:
    """Load the data, resolve the config against them, and build the network, schedule,
    Denoiser, objective, augmentation, post-hoc EMA profiles, the narrow guide (--guide-width)
    and the step pictures: the Trainer of `config` writing into `run_dir`. Returns (trainer,
    the resolved config, the training data set). Only rank 0 gets the loggers and the quality
    measurements."""
    logger = build.loggers(config, run_dir) if world.is_main else Loggers()
    kind = build.modality(config)
    dataset, data = kind.load(config.seed, report)
    config = build.resolve_config(config, data, report, len(dataset))
    kind = build.modality(config)  # with the resolved data: sizes, normalisation
    net = build.build_net(config).to(device)
    precision = resolve_precision(config.train.precision, device)
    shown = f"{precision} (auto)" if config.train.precision == "auto" else precision
    report(f"model: {type(net).__name__} with {count_parameters(net):,} parameters; data: {len(dataset):,} examples; "
           f"device: {device}; precision: {shown}")
    if config.train.batch_size > len(dataset):
        report(f"note: --batch-size {config.train.batch_size} is larger than the {len(dataset):,} training examples: "
               "each batch holds some examples more than once")
    model = build.training_model(net, config, device, world)
    guide = NarrowGuide(config, device) if config.train.guide_width else None  # --guide-width: autoguidance's narrow guide
    if guide is not None:
        report(guide.describe(net))

    def step_picture(step: int, ema_net: nn.Module) -> Path:
        """steps/step-N.png from the EMA weights during training."""
        was_training = ema_net.training
        path = step_picture_path(run_dir, step)
        for_kind(kind).step(build.make_run(run_dir, config, ema_net), path, step)
        ema_net.train(was_training)
        return path

    measure = []  # (what, measure, metric) of the run, made at the first measurement (own features)

    def evaluate(step: int, ema_net: nn.Module) -> dict:
        """The quality fields of a log.jsonl record for the EMA weights (--eval-every)."""
        run = build.make_run(run_dir, config, ema_net)
        if not measure:
            measure.extend(measures(kind).training_measure(run, report))
        what, scores, metric = measure
        return measure_quality_now(run, config.train.eval_samples or kind.eval_samples, scores, metric, what)

    objective = DiffusionLoss(config, build.build_denoiser(config, model), kind.discrete, None if guide is None else
                              build.build_denoiser(guide.config, build.training_model(guide.net, guide.config, device, world)))
    built = Trainer(config, net, objective, dataset, run_dir, modality=kind, device=device, model=model,
                    augment=build.HFlip() if config.data.hflip else None, posthoc=build.posthoc_profiles(config, net), guide=guide,
                    on_sample=step_picture, on_eval=evaluate if config.train.eval_every else None, logger=logger,
                    report=report, progress=progress, world=world)
    return built, config, dataset


def train(config: RunConfig, run_dir: Path, world: World, device: torch.device, *, resume: bool = False,
          overwrite: bool = False, report=lambda message: None,
          progress: bool = True) -> tuple[TrainResult, nn.Module, RunConfig, object]:
    """Train `config` into `run_dir` on this process of `world` (or continue it with `resume`: from
    its newest checkpoint that reads, or from step 0 if it has none); config.json is written once
    the options, the data and any checkpoint have been checked (with `overwrite`, after the
    folder's earlier contents go: outputs.empty). Returns (the result, the EMA network, the
    resolved config, the training data set)."""
    # A run stopped before its first checkpoint (config.json alone) restarts in place from step 0.
    restart = resume and checkpoint.newest_checkpoint(run_dir) is None
    built, config, dataset = trainer(config, run_dir, world, device=device, report=report, progress=progress)
    report(f"writing the run to {run_dir}")
    if restart:
        report(f"{run_dir} has no complete checkpoint (training stopped before the first one): "
               "starting it again from step 0 with its config.json")
        if world.is_main:
            rundir.truncate_log(run_dir, 0)  # the stopped attempt's records
    elif resume:  # reads and checks the checkpoint (a clear error if it does not fit config.json)
        report(f"resuming from step {built.resume()}")
    world.barrier()  # every rank has looked at run_dir (the CLI checks it) before rank 0 writes into it
    if world.is_main:
        if overwrite and not resume:  # the folder's earlier contents go once everything has been checked
            outputs.empty(run_dir)
        rundir.write_config(run_dir, config)
    result = built.fit()
    built.close()  # before the process group goes
    return result, built.ema.model, config, dataset
