"""Drawing samples from a loaded run: the Run itself, its samples, the class labels and the
checks of how samples are asked for.

`draw(run, n, ...)` runs one sampler of `samplers/` from seeded noise x_T over a timestep
grid and returns the samples in model space and in data space. What the data are (points
or images: the sample shape, the conversion to data space, the default clipping) is the
run's modality's to say; this module never asks.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ._tensor import randn_like
from .config import RunConfig
from .denoiser import Denoiser, DenoiserLike, for_sampling
from .errors import UserError, check_choice, check_finite, check_not_negative, check_positive
from .samplers import SAMPLERS, Trajectory
from .schedules import timestep_grid


DEFAULT_SAMPLER = "dpm++sde"  # `sample`'s default: SDE-DPM-Solver++(2M) at 20 steps scores at least as well as
DEFAULT_STEPS = 20  # 1,000 ancestral DDPM steps on digits and on the 2-D sets (docs/distillation.md), at 50× fewer evaluations


@dataclass(frozen=True)
class FixedGrid:
    """The sampler and explicit step grid a distilled run was trained for (its distill.json)."""

    sampler: str  # "ddim" (η = 0): what progressive distillation distils
    timesteps: tuple[int, ...]  # descending indices into the schedule; after the last comes the data

    @property
    def steps(self) -> int:
        return len(self.timesteps)

    def matches(self, sampler: str, steps: int | None) -> bool:
        """Whether `sampler` with `steps` (None: the sampler's default) walks this grid."""
        return sampler == self.sampler and steps in (None, self.steps)


@dataclass
class Run:
    """A trained network with everything needed to sample it."""

    directory: Path
    config: RunConfig
    net: nn.Module  # in eval mode, no gradients
    modality: object  # the run's modality.Points or modality.Images
    base: Denoiser  # the network as x̂_0 and ε̂, unguided and unclipped
    denoiser: DenoiserLike  # what samplers get by default: no guidance, the modality's clipping
    classifier: nn.Module | None = None  # its noise-aware classifier p(y | x_t, t) for classifier guidance, once loaded
    fixed: FixedGrid | None = None  # a distilled run's own sampler and grid (its default), else None

    @property
    def device(self) -> torch.device:
        return next(self.net.parameters()).device


@dataclass
class Samples:
    model: torch.Tensor  # [N, ...] in model space
    data: np.ndarray  # points [N, D] float in data space, or images [N, H, W, C] uint8
    trajectory: Trajectory | None


@dataclass
class SampleSettings:
    """How samples are drawn for a measurement (every field is recorded)."""

    num: int = 2000  # samples
    sampler: str = "dpm++sde"  # SDE-DPM-Solver++(2M): at 20 steps as good as 1,000 of DDPM on digits (README)
    steps: int | None = 20  # None: all T
    seed: int = 0
    guidance: float = 0.0  # conditional runs: classifier-free guidance w (labels balanced over the classes)
    classifier_scale: float = 0.0  # classifier guidance s by the run's classifier (labels balanced over its classes)
    weights: str = "ema"  # which weights the run was loaded with: best, last, ema, model or a path (recorded only)


WEIGHT_NAMES = {"ema": "EMA", "last": "EMA", "model": "live", "best": "best (EMA)"}  # how a record names --weights


def default_sampling(run: Run) -> tuple[str, int]:
    """(sampler, steps) a run samples with when none is asked for: a distilled run's own grid,
    else DEFAULT_SAMPLER at DEFAULT_STEPS (at most the run's T)."""
    if run.fixed is not None:
        return run.fixed.sampler, run.fixed.steps
    return DEFAULT_SAMPLER, min(DEFAULT_STEPS, run.config.diffusion.num_steps)


def off_grid_note(run: Run, sampler: str, steps: int | None) -> str | None:
    """For a distilled run asked for another sampler or step count than it was distilled for:
    the line that says so (it is allowed: the student is still a diffusion model, but only its
    own grid was trained to match the teacher, and nothing else was measured)."""
    if run.fixed is None or run.fixed.matches(sampler, steps):
        return None
    return (f"note: {run.directory} was distilled for {run.fixed.sampler} on {run.fixed.steps} steps "
            f"{list(run.fixed.timesteps)}; {sampler} with {steps or 'all'} steps runs it off that grid, at a quality not measured")


def run_grid(run: Run, sampler: str, steps: int | None, spacing: str = "linspace") -> torch.Tensor:
    """The descending timesteps `sampler` walks on this run: a distilled run's recorded grid when
    asked for its own sampler and step count, else sampling_grid (`steps` of the T by `spacing`)."""
    if run.fixed is not None and run.fixed.matches(sampler, steps):
        return torch.tensor(run.fixed.timesteps, dtype=torch.long)
    return sampling_grid(run.config.diffusion.num_steps, steps, spacing)


def check_sampler(sampler: str, steps: int | None, T: int) -> None:
    """The one check of a sampler name and a step count against the run's T."""
    check_choice("sampler", sampler, SAMPLERS)
    if steps is not None and not 0 < steps <= T:
        raise UserError(f"--steps must lie in 1..{T} (the trained T), got {steps}")


def check_sampler_options(options: dict) -> None:
    """The checks of the options a sampler takes besides its grid (today: DDIM's η)."""
    if "eta" in options:
        check_not_negative("--eta (0: deterministic DDIM, 1: DDPM-like)", options["eta"])


def network_evaluations(sampler: str, steps: int) -> int:
    """Network evaluations per sample (NFE, denoiser calls), as the sampler declares them."""
    return SAMPLERS[sampler].network_evaluations(steps)


def network_passes(sampler: str, steps: int, guidance: float = 0.0) -> int:
    """Rows of a sample the network runs through: the NFE, doubled under classifier-free
    guidance w ≠ 0 (each evaluation runs the conditional and the unconditional pass as one batch)."""
    return network_evaluations(sampler, steps) * (2 if guidance else 1)


BATCH = 4096  # samples drawn in one sampler call


def classifier_passes(sampler: str, steps: int, classifier_scale: float = 0.0) -> int:
    """Classifier passes per sample under classifier guidance s ≠ 0: a forward and a backward
    (the gradient of log p(y | x_t, t)) at every network evaluation; 0 without it."""
    return 2 * network_evaluations(sampler, steps) if classifier_scale else 0


def classifier_classes(run: Run) -> int:
    """The classes of the run's classifier when it is loaded (0: none loaded)."""
    return run.classifier.num_classes if run.classifier is not None else 0


def sampling_denoiser(run: Run, guidance: float = 0.0, clip: str | None = None, percentile: float = 0.995,
                      classifier_scale: float = 0.0) -> DenoiserLike:
    """The run's denoiser with classifier-free guidance w = `guidance` (conditional runs),
    classifier guidance of scale `classifier_scale` by `run.classifier` (when loaded; at 0 it
    only keeps the labels from an unconditional network) and `clip` (None: the modality's
    default, static for images, none for points)."""
    if not guidance and clip is None and run.classifier is None:
        return run.denoiser
    return for_sampling(run.base, run.config.num_classes, guidance, clip or run.modality.default_clip, percentile,
                        classifier=run.classifier, classifier_scale=classifier_scale)


def draw(
    run: Run,
    n: int,
    *,
    seed: int = 0,
    sampler: str | None = "ddpm",
    steps: int | None = None,
    spacing: str = "linspace",
    keep: list[int] | None = None,
    labels: torch.Tensor | None = None,
    guidance: float = 0.0,
    clip: str | None = None,
    percentile: float = 0.995,
    classifier_scale: float = 0.0,
    batch_size: int = BATCH,
    **sampler_options,
) -> Samples:
    """n samples from a loaded run, in model space and data space, on `steps` of the T
    trained timesteps (default: all T) chosen by `spacing` (linspace, leading or trailing);
    `sampler` None is the run's default (default_sampling: a distilled run's own grid), and a
    distilled run asked for its own sampler and step count walks its recorded grid.
    A conditional run takes `labels` [n] (None: unconditional) and a classifier-free
    `guidance` strength w (0: the plain conditional model). `classifier_scale` s: classifier
    guidance towards `labels` by the run's classifier (`run.classifier`, build.with_classifier;
    unconditional runs too), after classifier-free guidance. `clip`: static, dynamic
    (thresholding at `percentile`) or none; None is the modality's default. `keep`: the
    timesteps whose x_t and x̂_0 the first batch's trajectory keeps. `sampler_options` go
    to the sampler (e.g. eta=1.0 for ddim)."""
    # Any finite w: 0 is the conditional model, -1 the unconditional one (ε = ε(x,∅)), between
    # them a blend, below -1 anti-guidance, away from the class: each means something, so none is refused.
    check_finite("--guidance", guidance)
    check_finite("--classifier-scale", classifier_scale)  # any finite s: below 0 guides away from the class
    check_labels(run.config, labels, guidance, classifier_classes(run), classifier_scale)
    check_positive("the number of samples", n)
    T = run.config.diffusion.num_steps
    if sampler is None:
        sampler, default_steps = default_sampling(run)
        steps = default_steps if steps is None else steps
    check_sampler(sampler, steps, T)
    check_sampler_options(sampler_options)
    generator = torch.Generator().manual_seed(seed)
    trajectory = Trajectory(keep) if keep is not None else None
    grid = run_grid(run, sampler, steps, spacing)
    denoiser = sampling_denoiser(run, guidance, clip, percentile, classifier_scale)
    chunks = []
    for start in range(0, n, batch_size):
        shape = run.modality.sample_shape(min(batch_size, n - start))
        x_T = randn_like(torch.empty(shape, device=run.device), generator)
        label = None if labels is None else labels[start : start + shape[0]].to(run.device)
        callback = trajectory if start == 0 else None
        chunks.append(
            SAMPLERS[sampler](denoiser, x_T, grid, label=label, generator=generator, callback=callback, **sampler_options).cpu()
        )
    x = torch.cat(chunks)
    return Samples(x, run.modality.to_data_space(x), trajectory)


def check_labels(config: RunConfig, labels: torch.Tensor | None, guidance: float, classifier_classes: int = 0,
                 classifier_scale: float = 0.0) -> None:
    """Clear errors for labels or guidance a run cannot take. `classifier_classes`: the classes
    of the run's classifier when it is loaded (then an unconditional run takes labels too:
    the classes classifier guidance steers towards)."""
    if classifier_scale and not classifier_classes:
        raise UserError("--classifier-scale needs the run's classifier (RUN/classifier/); train one with "
                        "`ddpmkit train-classifier --run RUN`")
    if classifier_scale and labels is None:
        raise UserError("--classifier-scale needs --class K or --class all: the class the classifier guides towards")
    if not config.num_classes:
        if guidance:
            raise UserError("--guidance needs a conditional model; this run was trained without --conditional")
        if labels is not None and not classifier_classes:
            raise UserError("--class needs a conditional model; this run was trained without --conditional and has no "
                            "classifier: train one with `ddpmkit train-classifier --run RUN` to guide it with --classifier-scale")
    classes = config.num_classes or classifier_classes
    if labels is not None and len(labels) and (int(labels.min()) < 0 or int(labels.max()) >= classes):
        bad = int(labels.max()) if int(labels.max()) >= classes else int(labels.min())
        raise UserError(f"class {bad} is outside the trained labels 0..{classes - 1}")


def class_labels(config: RunConfig, which: str | None, n: int, classifier_classes: int = 0) -> torch.Tensor | None:
    """Labels for `--class`: None (unconditional), one class index, or "all" (n per class,
    class after class); `classifier_classes` as in check_labels."""
    if which is None:
        return None
    if which == "all":
        classes = config.num_classes or classifier_classes
        if not classes:
            check_labels(config, torch.zeros(1, dtype=torch.long), 0.0)  # the one line of a run without labels
        return torch.arange(classes).repeat_interleave(n)
    try:
        k = int(which)
    except ValueError:
        raise UserError(f"--class takes a class index or 'all', got {which!r}") from None
    labels = torch.full((n,), k, dtype=torch.long)
    check_labels(config, labels, 0.0, classifier_classes)
    return labels


def balanced_labels(config: RunConfig, n: int, seed: int, classes: int | None = None) -> torch.Tensor | None:
    """n labels spread evenly over `classes` (default: a conditional run's classes) in a
    seeded order (None for none): what a measurement of a conditional or classifier-guided
    model samples."""
    classes = config.num_classes if classes is None else classes
    if not classes:
        return None
    g = torch.Generator().manual_seed(seed)
    return (torch.arange(n) % classes)[torch.randperm(n, generator=g)]


def picture_steps(T: int, count: int, steps: int | None = None, spacing: str = "linspace",
                  grid: torch.Tensor | None = None) -> list[int]:
    """About `count` timesteps, evenly spread over the sampling grid (all T, `steps` of them, or `grid`)."""
    if grid is None:
        grid = torch.arange(T) if steps is None else timestep_grid(T, steps, spacing)
    return sorted({int(grid[int(round(v))]) for v in np.linspace(0, len(grid) - 1, count)})


def sampling_grid(T: int, steps: int | None = None, spacing: str = "linspace") -> torch.Tensor:
    """The descending timesteps `draw` walks: all T (T-1 … 0), or `steps` of them by `spacing`."""
    return torch.arange(T - 1, -1, -1) if steps is None else timestep_grid(T, steps, spacing)


def nearest_grid_steps(asked: list[int], grid: torch.Tensor) -> list[tuple[int, int]]:
    """(asked, used) for each asked timestep: the grid step nearest to it (the earlier in sampling order on a tie),
    so a strip asked at t = 500 of a 50-step grid shows the state the sampler actually visits."""
    pairs = []
    for t in asked:
        if not 0 <= t <= int(grid[0]):
            raise UserError(f"--strip takes timesteps in 0..{int(grid[0])} (the sampler's first step), got {t}")
        distance = (grid - t).abs()
        best = int(grid[int(torch.nonzero(distance == distance.min())[0])])
        pairs.append((t, best))
    return pairs


def draw_recorded(run: Run, s: SampleSettings) -> tuple[np.ndarray, dict]:
    """Data-space samples drawn as `s` says (a conditional run's labels balanced over its
    classes, or the classifier's under classifier guidance), and the record of how: sample
    count, sampler, steps, network evaluations and passes, seed, weights, clipping, T; labels
    and guidance for a conditional run; the scale and classifier passes under classifier guidance."""
    classes = run.config.num_classes or (classifier_classes(run) if s.classifier_scale else 0)
    labels = balanced_labels(run.config, s.num, s.seed, classes)
    steps = s.steps or run.config.diffusion.num_steps
    data = draw(run, s.num, seed=s.seed, sampler=s.sampler, steps=s.steps, labels=labels, guidance=s.guidance,
                classifier_scale=s.classifier_scale).data
    guided = s.guidance if labels is not None else 0.0
    record = {"num": s.num, "sampler": s.sampler, "steps": steps, "nfe": network_evaluations(s.sampler, steps),
              "network_passes": network_passes(s.sampler, steps, guided), "seed": s.seed, "weights": WEIGHT_NAMES.get(s.weights, s.weights),
              "clip": run.modality.default_clip, "trained_steps_T": run.config.diffusion.num_steps}
    if labels is not None:
        record.update(labels=f"balanced over {classes} classes", guidance=s.guidance)
    if s.classifier_scale:
        record.update(classifier_scale=s.classifier_scale,
                      classifier_passes=classifier_passes(s.sampler, steps, s.classifier_scale))
    return data, record
