"""Drawing samples from a loaded run: the Run itself, its samples, and the one sampling request.

A `SamplingRequest` says everything that decides how samples are drawn (the sampler, its
steps and their spacing, η, the seed, the clipping of x̂_0, the classes, every guidance with its
scale, the weights, the batch); how many is the caller's. It is built once (from the command
line, cli/options.py, or from Python keywords), checks itself when made, and `resolve(run)`
fills in its defaults against the run once: the sampler and steps (DEFAULT_SAMPLER on
DEFAULT_STEPS, a distilled run's own grid, or a method's own default), all T for a named sampler
given no steps, the kind's clipping, which classes "balanced" means; autoguidance only where a guide
is named (off by default: measured in docs/guidance.md). Every consumer takes the
request whole, and every record stores `record(run)`, the request as resolved.

`draw(run, n, request)` runs one sampler of `samplers/` from seeded noise x_T over the request's
grid and returns the samples in model space and in data space. What the data are (points or
images: the sample shape, the conversion to data space, the default clipping) is the run's kind's
to say; this module never asks.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from ._tensor import randn_like
from .config import RunConfig
from .denoiser import CLIPS, Denoiser, DenoiserLike, for_sampling, in_interval
from .errors import UserError, check_choice, check_finite, check_not_negative, check_positive
from .guidance import NO_GUIDE, Guidance, Guide
from .modality import Kind
from .samplers import SAMPLERS, Trajectory
from .schedules import SPACINGS, timestep_grid

DEFAULT_SAMPLER = "dpm++sde"  # the default of every command that samples: SDE-DPM-Solver++(2M) at 20 steps scores at
DEFAULT_STEPS = 20  # least as well as 1,000 ancestral DDPM steps on digits and the 2-D sets (docs/sampling.md), at 50× fewer evaluations
BATCH = 4096  # samples drawn in one sampler call
WEIGHT_NAMES = {"ema": "EMA", "last": "EMA", "model": "live", "best": "best (EMA)"}  # how a record names the weights
BALANCED = "balanced"  # classes: n labels spread evenly over the run's classes (what measurements draw)
ALL = "all"  # classes: n samples of every class, class after class


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
    modality: Kind  # the run's kind of data: modality.Points or modality.Images
    base: Denoiser  # the network as x̂_0 and ε̂, unguided and unclipped
    denoiser: DenoiserLike  # the unguided denoiser with the kind's clipping
    classifier: nn.Module | None = None  # its noise-aware classifier p(y | x_t, t) for classifier guidance, once loaded
    fixed: FixedGrid | None = None  # a distilled run's own sampler and grid (its default), else None
    guide: Guide | None = None  # its guide for autoguidance, once loaded (build.load_guide)

    @property
    def device(self) -> torch.device:
        return next(self.net.parameters()).device

    @property
    def classes(self) -> int:
        """The classes its samples can be asked for: a conditional run's, or its classifier's once loaded (0: none)."""
        return self.config.num_classes or (self.classifier.num_classes if self.classifier is not None else 0)


@dataclass
class Samples:
    model: torch.Tensor  # [N, ...] in model space
    data: np.ndarray  # points [N, D] float in data space, or images [N, H, W, C] uint8
    trajectory: Trajectory | None
    labels: torch.Tensor | None = None  # [N] the class of each sample, or None


@dataclass(frozen=True)
class SamplingRequest:
    """How samples are drawn (everything but how many). None means "the default", filled in
    once by `resolve(run)`; what needs no run is checked when the request is made."""

    sampler: str | None = None  # ddpm, ddim, dpm++, dpm++sde, heun; None: DEFAULT_SAMPLER (a distilled run: its own)
    steps: int | None = None  # sampling steps of the trained T; None: the default sampler's, or all T for a named one
    spacing: str = "linspace"  # which timesteps: linspace, leading (DDIM's), trailing (Lin et al. 2024)
    eta: float | None = None  # ddim only: 0 deterministic, 1 ancestral-like; None: 0
    seed: int = 0  # seed of the sampling noise
    clip: str | None = None  # x̂_0 kept in range: static, dynamic, none; None: the kind's (static for images, none for points)
    percentile: float = 0.995  # dynamic clipping: the percentile of |x̂_0| (Imagen's thresholding)
    classes: int | str | tuple[int, ...] | None = None  # None: unlabelled; K: class K; "all": n of each class;
    # "balanced": n spread over them; a tuple: one class per sample (Python only)
    guidance: Guidance = Guidance()
    weights: str = "ema"  # best, last, ema, model or a .safetensors path (build.weights_file)
    batch: int = BATCH  # samples per sampler call
    progress: bool = False  # bars on stderr while the samples are drawn (the sampler's steps) and over the work done
    # with them (compare's cells, an edit's steps, evaluate's feature passes); the command line's unless --no-progress.
    # It shows what runs, never changes a sample, and no record stores it

    def __post_init__(self) -> None:
        if self.sampler is not None:
            check_choice("sampler", self.sampler, SAMPLERS)
        if self.steps is not None:
            check_positive("--steps", self.steps)
        check_choice("timestep spacing", self.spacing, SPACINGS)
        if self.eta is not None:
            check_not_negative("--eta (0: deterministic DDIM, 1: DDPM-like)", self.eta)
            if self.sampler != "ddim":
                raise UserError(f"--eta applies to --sampler ddim only, not {self.sampler or 'the default ' + DEFAULT_SAMPLER}")
        if self.clip is not None:
            check_choice("clipping", self.clip, CLIPS)
        check_finite("--dynamic-threshold", self.percentile)
        if not 0 < self.percentile <= 1:
            raise UserError(f"--dynamic-threshold (the percentile of |x̂_0|) must lie in (0, 1], got {self.percentile}")
        object.__setattr__(self, "classes", _classes(self.classes))
        check_positive("the batch of samples per sampler call", self.batch)

    # ---- against a run ---------------------------------------------------------------------
    def resolve(self, run: Run, default: tuple[str, int | None] | None = None) -> SamplingRequest:
        """This request with its defaults filled in against `run` and checked against it: the
        sampler and steps (None: `default`, a method's own (sampler, steps or None for all T),
        else the run's: default_sampling), all T for a sampler named without steps (a distilled
        run's own step count for its own sampler), the kind's clipping, and "balanced" classes
        made None where the run has none to balance. Resolving a resolved request changes nothing."""
        T = run.config.diffusion.num_steps
        sampler, steps = self.sampler, self.steps
        if sampler is None:
            sampler, steps = default or default_sampling(run)
            steps = self.steps if self.steps is not None else steps
        if steps is None:
            steps = run.fixed.steps if run.fixed is not None and run.fixed.sampler == sampler else T
        check_sampler(sampler, steps, T)
        classes = None if self.classes == BALANCED and not _balances(run, self) else self.classes
        resolved = dataclasses.replace(self, sampler=sampler, steps=steps, clip=self.clip or run.modality.default_clip,
                                       classes=classes, guidance=self._autoguidance(run))
        resolved.check_classes(run)
        return resolved

    def _autoguidance(self, run: Run) -> Guidance:
        """The guidance with its guide checked: a named guide must be the one loaded (build.load_for
        loads it); none named stays None, off. Off by default, measured: over 3 training seeds of the
        digits default, the run's own guide (the step-475 EMA, W = 2) moved own-feature FD from
        0.178 ± 0.006 to 0.219 ± 0.063 (benchmarks/guidance_digits.py, docs/guidance.md)."""
        g = self.guidance
        name = g.autoguide
        if name not in (None, NO_GUIDE) and (run.guide is None or run.guide.name != name):
            raise UserError(f"--autoguide {name}: the guide is not loaded; load it with build.load_guide(run, {name!r}) "
                            "(the commands do)")
        if g.interval is not None and name in (None, NO_GUIDE) and not g.cfg:
            raise UserError("--guidance-interval limits --autoguide or --guidance to its noise levels, and neither is on")
        return dataclasses.replace(g, autoguide=name)

    def check_classes(self, run: Run) -> None:
        """Clear errors for classes or guidance the run cannot take (an unconditional run takes
        classes only with its classifier loaded: the classes classifier guidance steers towards)."""
        g, classes = self.guidance, run.classes
        has_classifier = run.classifier is not None
        if g.classifier and not has_classifier:
            raise UserError("--classifier-scale needs the run's classifier (RUN/classifier/); train one with "
                            "`ddpmkit train-classifier --run RUN`")
        if g.classifier and self.classes is None:
            raise UserError("--classifier-scale needs --class K or --class all: the class the classifier guides towards")
        if not run.config.num_classes:
            if g.cfg:
                raise UserError("--guidance needs a conditional model; this run was trained without --conditional")
            if self.classes is not None and not has_classifier:
                raise UserError("--class needs a conditional model; this run was trained without --conditional and has no "
                                "classifier: train one with `ddpmkit train-classifier --run RUN` to guide it with --classifier-scale")
        asked = self.classes if isinstance(self.classes, tuple) else (self.classes,) if isinstance(self.classes, int) else ()
        if asked and max(asked) >= classes:
            raise UserError(f"class {max(asked)} is outside the trained labels 0..{classes - 1}")

    def guide_name(self) -> str | None:
        """The guide this request names (None: none, no autoguidance)."""
        return self.guidance.guide

    def needs_classifier(self, config: RunConfig) -> bool:
        """Whether drawing this request needs the run's classifier: classifier guidance, or
        classes asked of an unconditional run."""
        return bool(self.guidance.classifier) or (self.classes is not None and self.classes != BALANCED
                                                  and not config.num_classes)

    def sampler_options(self) -> dict:
        """The options that go to the sampler itself (today: DDIM's η)."""
        return {} if self.eta is None else {"eta": self.eta}

    def record(self, run: Run) -> dict:
        """The request as resolved against `run`, with what it costs per sample: what every record
        (metrics.json, edit.json, compare.json, log.jsonl, the model card) stores."""
        r = self.resolve(run)
        labelled = r.classes is not None
        nfe = network_evaluations(r.sampler, r.steps)
        g = r.guidance
        autoguided = g.guide is not None
        main, guide = passes(run, r) if autoguided or g.interval is not None else (nfe * (2 if g.cfg and labelled else 1), 0)
        out = {"sampler": r.sampler, "steps": r.steps, "spacing": r.spacing, "nfe": nfe,
               "network_passes": main + guide, "seed": r.seed,
               "weights": WEIGHT_NAMES.get(r.weights, r.weights), "clip": r.clip, "trained_steps_T": run.config.diffusion.num_steps}
        if r.clip == "dynamic":
            out["percentile"] = r.percentile
        if r.eta is not None:
            out["eta"] = r.eta
        if run.fixed is not None and run.fixed.matches(r.sampler, r.steps):
            out["grid"] = list(run.fixed.timesteps)
        if labelled:
            out["labels"] = (f"balanced over {run.classes} classes" if r.classes == BALANCED else
                             f"each of the {run.classes} classes" if r.classes == ALL else
                             f"{len(r.classes)} given" if isinstance(r.classes, tuple) else f"class {r.classes}")
            out["guidance"] = r.guidance.cfg
        if r.guidance.classifier:
            out.update(classifier_scale=r.guidance.classifier, classifier_passes=2 * nfe)
        if autoguided:
            out.update(autoguide=g.autoguide, guide=run.guide.source, autoguide_scale=g.autoguide_scale, guide_passes=guide)
        if g.interval is not None:
            out["guidance_interval"] = {"sigma": list(g.interval), "evaluations_inside": inside_count(run, r)}
        return out


def passes_note(record: dict) -> str | None:
    """What a recorded request's network passes per sample are made of, where guidance adds any
    (None: one pass per network evaluation): what `sample` prints and `evaluate` reports."""
    nfe, total, guide = record["nfe"], record.get("network_passes", record["nfe"]), record.get("guide_passes", 0)
    parts = []
    if "autoguide" in record:
        parts.append(f"autoguidance by {record['autoguide']} (W = {record['autoguide_scale']:g}): {guide} passes of the guide")
    if total - guide != nfe:
        parts.append(f"{total - guide} of the main network (guidance runs the conditional and the unconditional model)")
    if "guidance_interval" in record:
        lo, hi = record["guidance_interval"]["sigma"]
        parts.append(f"guided only at {lo:g} ≤ σ ≤ {hi:g}: {record['guidance_interval']['evaluations_inside']} of the "
                     f"{nfe} evaluations")
    if not parts:
        return None
    return f"{nfe} network evaluations per sample = {total} network passes; " + "; ".join(parts)


def _classes(value) -> int | str | tuple[int, ...] | None:
    """The classes of a request: None, a class index K (from an int or its text), "all", "balanced",
    or a class per sample (a sequence of indices, kept as a tuple)."""
    if isinstance(value, (tuple, list, torch.Tensor)):
        return tuple(_classes(int(k)) for k in value)
    if value is None or value in (ALL, BALANCED):
        return value
    try:
        k = int(value)
    except (TypeError, ValueError):
        raise UserError(f"--class takes a class index or 'all', got {value!r}") from None
    if k < 0 or (isinstance(value, float) and value != k):
        raise UserError(f"--class takes a class index (0, 1, ...) or 'all', got {value!r}")
    return k


def _balances(run: Run, request: SamplingRequest) -> bool:
    """Whether "balanced" classes mean labels on this run: a conditional run, or classifier guidance by its classifier."""
    return bool(run.config.num_classes or (request.guidance.classifier and run.classifier is not None))


def default_sampling(run: Run) -> tuple[str, int]:
    """(sampler, steps) a run samples with when none is asked for: a distilled run's own grid,
    else DEFAULT_SAMPLER at DEFAULT_STEPS (at most the run's T)."""
    if run.fixed is not None:
        return run.fixed.sampler, run.fixed.steps
    return DEFAULT_SAMPLER, min(DEFAULT_STEPS, run.config.diffusion.num_steps)


def off_grid_note(run: Run, r: SamplingRequest) -> str | None:
    """For a distilled run asked for another sampler or step count than it was distilled for:
    the line that says so (it is allowed: the student is still a diffusion model, but only its
    own grid was trained to match the teacher, and nothing else was measured). `r`: the request
    as resolved against `run`."""
    if run.fixed is None or run.fixed.matches(r.sampler, r.steps):
        return None
    return (f"note: {run.directory} was distilled for {run.fixed.sampler} on {run.fixed.steps} steps "
            f"{list(run.fixed.timesteps)}; {r.sampler} with {r.steps} steps runs it off that grid, at a quality not measured")


def check_sampler(sampler: str, steps: int, T: int) -> None:
    """The one check of a sampler name and a step count against the run's T."""
    check_choice("sampler", sampler, SAMPLERS)
    if not 0 < steps <= T:
        raise UserError(f"--steps must lie in 1..{T} (the trained T), got {steps}")


def network_evaluations(sampler: str, steps: int) -> int:
    """Network evaluations per sample (NFE, denoiser calls), as the sampler declares them."""
    return SAMPLERS[sampler].network_evaluations(steps)


def evaluated_at(run: Run, request: SamplingRequest) -> torch.Tensor:
    """The timestep of each network evaluation of one sample drawn as `request` says (Sampler.evaluated_at on its grid)."""
    r = request.resolve(run)
    return torch.tensor(SAMPLERS[r.sampler].evaluated_at(grid(run, r).tolist()), dtype=torch.long)


def inside_count(run: Run, request: SamplingRequest) -> int:
    """How many of a sample's network evaluations lie inside the request's guidance interval (all without one)."""
    r = request.resolve(run)
    at = evaluated_at(run, r)
    return int(in_interval(run.base.schedule, at, r.guidance.interval).sum())


def passes(run: Run, request: SamplingRequest) -> tuple[int, int]:
    """(main network passes, guide network passes) per sample drawn as `request` says: inside the
    guidance interval (everywhere without one) classifier-free guidance doubles the main model's
    passes and autoguidance adds the guide's (doubled too under classifier-free guidance, which
    mixes two autoguided predictions); outside it each evaluation is one main pass."""
    r = request.resolve(run)
    g = r.guidance
    at = evaluated_at(run, r)
    inside = int(in_interval(run.base.schedule, at, g.interval).sum())
    cfg = 2 if g.cfg and r.classes is not None and run.config.num_classes else 1
    main = len(at) + (cfg - 1) * inside
    guide = cfg * inside if g.guide is not None and g.autoguide_scale != 1 else 0
    return main, guide


def grid(run: Run, request: SamplingRequest) -> torch.Tensor:
    """The descending timesteps the request's sampler walks on this run: a distilled run's recorded
    grid when asked for its own sampler and step count, else `steps` of the T by `spacing`."""
    r = request.resolve(run)
    if run.fixed is not None and run.fixed.matches(r.sampler, r.steps):
        return torch.tensor(run.fixed.timesteps, dtype=torch.long)
    return timestep_grid(run.config.diffusion.num_steps, r.steps, r.spacing)


def denoiser(run: Run, request: SamplingRequest) -> DenoiserLike:
    """The run's denoiser as the request asks: autoguidance by `run.guide`, classifier-free guidance (conditional runs),
    classifier guidance by `run.classifier` (when loaded; at scale 0 it only keeps the labels from
    an unconditional network), then the clipping (denoiser.for_sampling)."""
    r = request.resolve(run)
    g = r.guidance
    guide = None if g.guide is None else run.guide.denoiser
    return for_sampling(run.base, run.config.num_classes, g.cfg, r.clip, r.percentile, classifier=run.classifier,
                        classifier_scale=g.classifier, guide=guide, guide_scale=g.autoguide_scale, interval=g.interval)


def labels(run: Run, request: SamplingRequest, n: int) -> torch.Tensor | None:
    """The labels of n samples the request asks for: None, n of class K, n of every class (class
    after class: n·classes in all), or n spread evenly over the classes in an order seeded by the
    request's seed ("balanced", what a measurement samples)."""
    r = request.resolve(run)
    if r.classes is None:
        return None
    if r.classes == ALL:
        return torch.arange(run.classes).repeat_interleave(n)
    if r.classes == BALANCED:
        g = torch.Generator().manual_seed(r.seed)
        return (torch.arange(n) % run.classes)[torch.randperm(n, generator=g)]
    if isinstance(r.classes, tuple):
        if len(r.classes) != n:
            raise UserError(f"{len(r.classes)} classes given for {n} samples; give one class per sample")
        return torch.tensor(r.classes, dtype=torch.long)
    return torch.full((n,), r.classes, dtype=torch.long)


def draw(run: Run, n: int, request: SamplingRequest = SamplingRequest(), *, keep: list[int] | None = None,
         default: tuple[str, int | None] | None = None) -> Samples:
    """Samples of `run` as `request` asks (resolved against the run with a method's own `default`,
    as SamplingRequest.resolve): n of them, or n of every class for classes "all", in model space
    and in data space, with their labels. `keep`: the timesteps whose x_t and x̂_0 the first
    batch's trajectory keeps."""
    check_positive("the number of samples", n)
    r = request.resolve(run, default)
    y = labels(run, r, n)
    n = n if y is None else len(y)
    generator = torch.Generator().manual_seed(r.seed)
    trajectory = Trajectory(keep) if keep is not None else None
    steps, model = grid(run, r), denoiser(run, r)
    batches = range(0, n, r.batch)
    bar = tqdm(total=len(steps) * len(batches), disable=not r.progress, unit="step", leave=False, dynamic_ncols=True,
               desc=f"drawing {n:,} with {r.sampler}, {len(steps)} steps")
    chunks = []
    for start in batches:
        shape = run.modality.sample_shape(min(r.batch, n - start))
        x_T = randn_like(torch.empty(shape, device=run.device), generator)
        label = None if y is None else y[start : start + shape[0]].to(run.device)
        kept = trajectory if start == 0 else None

        def callback(**state) -> None:  # the sampler's step: kept (the first batch's trajectory) and counted
            if kept is not None:
                kept(**state)
            bar.update()

        chunks.append(SAMPLERS[r.sampler](model, x_T, steps, label=label, generator=generator,
                                          callback=callback if r.progress else kept, **r.sampler_options()).cpu())
    bar.close()
    x = torch.cat(chunks)
    return Samples(x, run.modality.to_data_space(x), trajectory, y)


def draw_recorded(run: Run, n: int, request: SamplingRequest) -> tuple[np.ndarray, dict]:
    """Data-space samples drawn as `request` says and the record of how: their number and the
    request as resolved (SamplingRequest.record), what a measurement stores beside its numbers."""
    samples = draw(run, n, request)
    return samples.data, {"num": len(samples.data), **request.record(run)}


def picture_steps(T: int, count: int, steps: int | None = None, spacing: str = "linspace",
                  grid: torch.Tensor | None = None) -> list[int]:
    """About `count` timesteps, evenly spread over the sampling grid (all T, `steps` of them, or `grid`)."""
    if grid is None:
        grid = torch.arange(T) if steps is None else timestep_grid(T, steps, spacing)
    return sorted({int(grid[int(round(v))]) for v in np.linspace(0, len(grid) - 1, count)})


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
