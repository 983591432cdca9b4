"""The one place that knows what the network predicts.

A Denoiser turns a network output at (x_t, t[, label]) into x̂_0 and ε̂, whatever the
network was trained to predict (ε, x_0 or v); samplers and losses only see those.
Wrappers (autoguidance, classifier-free guidance, classifier guidance, clipping) take and return the
same interface; `for_sampling` puts them around a Denoiser as a sampler needs them. A guidance
interval (Kynkäänniemi et al. 2024) limits autoguidance and classifier-free guidance to the noise
levels σ_t = √((1 − ᾱ_t)/ᾱ_t) inside it (`in_interval`).
"""

from __future__ import annotations

from dataclasses import dataclass
from collections.abc import Callable
from typing import Literal, Protocol, get_args

import torch
from torch import nn

from . import process
from ._tensor import append_dims, extract
from .errors import UserError, check_choice, check_finite
from .schedules import NoiseSchedule

Prediction = Literal["eps", "x0", "v"]
PREDICTIONS: tuple[str, ...] = get_args(Prediction)
Variance = Literal["fixed_small", "fixed_large", "learned_range"]
VARIANCES: tuple[str, ...] = get_args(Variance)


@dataclass(frozen=True)
class DenoiserOutput:
    x0: torch.Tensor  # x̂_0, same shape as x_t
    eps: torch.Tensor  # ε̂, same shape as x_t
    var_frac: torch.Tensor | None = None  # learned variance f: log σ² = f·log β + (1−f)·log β̃, unclamped


class DenoiserLike(Protocol):
    schedule: NoiseSchedule
    variance: str

    def __call__(self, x_t: torch.Tensor, t: torch.Tensor, label: torch.Tensor | None = None) -> DenoiserOutput: ...


class Denoiser:
    """(x_t, t[, label]) -> x̂_0, ε̂ from a network trained for `prediction`.

    net: module called as net(x_t, t) or net(x_t, t, label); returns the raw prediction.
    schedule: the training schedule; cast once to float32 on the network's device.
    prediction: what the network outputs: "eps" (Ho et al. 2020), "x0", or "v" (Salimans & Ho 2022).
    variance: reverse-process variance: "fixed_small" β̃_t, "fixed_large" β_t (β̃ at t = 0 in the
        bound's decoder; see NoiseSchedule.fixed_large_log_variance), or
        "learned_range": the network has twice the data's channels (dim 1), the second half
        a value v with f = (v + 1)/2 and log σ² = f·log β_t + (1 − f)·log β̃_t (Eq. 15 of
        Nichol & Dhariwal 2021); v is not clamped, as in improved-diffusion, so v ∉ [-1, 1]
        extrapolates beyond β̃_t or β_t and L_vlb keeps its gradient there.
    """

    def __init__(self, net: nn.Module, schedule: NoiseSchedule, prediction: str = "eps", variance: str = "fixed_small"):
        check_choice("prediction", prediction, PREDICTIONS)
        check_choice("variance", variance, VARIANCES)
        self.net = net
        tensor = next(iter([*net.parameters(), *net.buffers()]), None)
        self.schedule = schedule.to(tensor.device if tensor is not None else None)
        self.prediction = prediction
        self.variance = variance

    def raw(self, x_t: torch.Tensor, t: torch.Tensor, label: torch.Tensor | None = None) -> torch.Tensor:
        """The network's own output; with a learned variance, twice the data's channels."""
        return self.net(x_t, t) if label is None else self.net(x_t, t, label)

    def split(self, out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(the prediction the loss compares with `target`, the variance fraction f or None).

        f = (v + 1)/2 for the raw variance output v, unclamped (improved-diffusion's
        `frac = (model_var_values + 1) / 2`): a clamp would zero L_vlb's gradient for |v| > 1."""
        if self.variance != "learned_range":
            return out, None
        pred, v = out.chunk(2, dim=1)
        return pred, (v + 1) / 2

    def target(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """What a perfect network outputs for x_t = q_sample(x0, t, noise)."""
        if self.prediction == "eps":
            return noise
        if self.prediction == "x0":
            return x0
        return process.v_from_x0_eps(self.schedule, x0, t, noise)

    def from_raw(self, x_t: torch.Tensor, t: torch.Tensor, out: torch.Tensor) -> DenoiserOutput:
        """Convert a raw network output into x̂_0 and ε̂ (and the variance fraction)."""
        pred, frac = self.split(out)
        if self.prediction == "eps":
            return DenoiserOutput(x0=process.x0_from_eps(self.schedule, x_t, t, pred), eps=pred, var_frac=frac)
        x0 = pred if self.prediction == "x0" else process.x0_from_v(self.schedule, x_t, t, pred)
        return DenoiserOutput(x0=x0, eps=process.eps_from_x0(self.schedule, x_t, t, x0), var_frac=frac)

    def __call__(self, x_t: torch.Tensor, t: torch.Tensor, label: torch.Tensor | None = None) -> DenoiserOutput:
        return self.from_raw(x_t, t, self.raw(x_t, t, label))


Interval = tuple[float, float]  # (σ_lo, σ_hi): guidance applies where σ_lo ≤ σ_t ≤ σ_hi


def noise_level(schedule: NoiseSchedule, t: torch.Tensor) -> torch.Tensor:
    """σ_t = √((1 − ᾱ_t)/ᾱ_t) per row of t [B]: the noise level of x_t/√ᾱ_t, EDM's σ (Karras et
    al. 2022), in which guidance intervals are given (the schedule's sqrt_recipm1_alphas_cumprod)."""
    table = schedule.sqrt_recipm1_alphas_cumprod
    return table[t.to(table.device)]


def in_interval(schedule: NoiseSchedule, t: torch.Tensor, interval: Interval | None) -> torch.Tensor:
    """[B] bool: whether each row's σ_t lies in the guidance interval [σ_lo, σ_hi] (Kynkäänniemi
    et al. 2024: guidance limited to the middle noise levels); all True without an interval."""
    if interval is None:
        return torch.ones(t.shape, dtype=torch.bool, device=t.device)
    sigma = noise_level(schedule, t)
    return ((sigma >= interval[0]) & (sigma <= interval[1])).to(t.device)


class GuidedDenoiser:
    """Classifier-free guidance (Eq. 6 of Ho & Salimans 2021):
    ε̃ = (1 + w)·ε(x_t, c) − w·ε(x_t, ∅), with the conditional and unconditional passes
    batched into one network call on 2B rows; x̂_0 follows from ε̃. `null_label` is the index
    of the learned "no class" embedding. Without a label it is the unconditional model; with
    w = 0, or at a σ_t outside `interval` (Kynkäänniemi et al. 2024), it is the conditional model,
    in one pass of B rows."""

    def __init__(self, inner: DenoiserLike, guidance: float, null_label: int, interval: Interval | None = None):
        self.inner, self.guidance, self.null_label, self.interval = inner, guidance, null_label, interval
        self.schedule = inner.schedule
        self.variance = inner.variance

    def __call__(self, x_t: torch.Tensor, t: torch.Tensor, label: torch.Tensor | None = None) -> DenoiserOutput:
        if label is None or self.guidance == 0:
            return self.inner(x_t, t, label)
        inside = None if self.interval is None else in_interval(self.schedule, t, self.interval)
        if inside is not None and not bool(inside.any()):
            return self.inner(x_t, t, label)
        null = torch.full_like(label, self.null_label)
        both = self.inner(torch.cat([x_t, x_t]), torch.cat([t, t]), torch.cat([label, null]))
        eps_c, eps_u = both.eps.chunk(2)
        eps = (1 + self.guidance) * eps_c - self.guidance * eps_u
        if inside is not None:  # rows outside the interval keep the conditional ε
            eps = torch.where(append_dims(inside, x_t.ndim), eps, eps_c)
        frac = None if both.var_frac is None else both.var_frac.chunk(2)[0]  # the conditional pass's variance
        return DenoiserOutput(x0=process.x0_from_eps(self.schedule, x_t, t, eps), eps=eps, var_frac=frac)


class AutoGuidedDenoiser:
    """Autoguidance (Eq. 2 of Karras et al. 2024, "Guiding a diffusion model with a bad version
    of itself"): the main denoiser guided by a weaker version of itself (an earlier checkpoint,
    a shorter EMA, a narrower network trained on the same data),

        D_w = D_guide + w·(D_main − D_guide),

    applied alike to x̂_0 and ε̂ (ε̂ is affine in x̂_0 with weights that sum to 1, so both
    stay consistent). w = 1 is the main model (in one pass, no guide), w = 0 the guide; with
    D_guide = D_main it is the main model for every w. Outside `interval` (σ_t, Kynkäänniemi
    et al. 2024) it is the main model, without the guide's pass. Labels go to both (the guide
    of a conditional model is conditional too); the variance is the main model's."""

    def __init__(self, main: DenoiserLike, guide: DenoiserLike, scale: float, interval: Interval | None = None):
        self.main, self.guide, self.scale, self.interval = main, guide, scale, interval
        self.schedule = main.schedule
        self.variance = main.variance

    def __call__(self, x_t: torch.Tensor, t: torch.Tensor, label: torch.Tensor | None = None) -> DenoiserOutput:
        out = self.main(x_t, t, label)
        if self.scale == 1:
            return out
        inside = None if self.interval is None else in_interval(self.schedule, t, self.interval)
        if inside is not None and not bool(inside.any()):
            return out
        weak = self.guide(x_t, t, label)
        x0 = weak.x0 + self.scale * (out.x0 - weak.x0)
        eps = weak.eps + self.scale * (out.eps - weak.eps)
        if inside is not None:  # rows outside the interval keep the main model's output
            keep = append_dims(inside, x_t.ndim)
            x0, eps = torch.where(keep, x0, out.x0), torch.where(keep, eps, out.eps)
        return DenoiserOutput(x0=x0, eps=eps, var_frac=out.var_frac)


Classifier = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (x_t [B, ...], t [B]) -> logits [B, K]


def log_prob_gradient(classifier: Classifier, x_t: torch.Tensor, t: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
    """∇_{x_t} log p(y = label | x_t, t), one row per sample: one forward and one backward pass
    of the classifier, with autograd on even inside a sampler's torch.no_grad. The rows of a
    batch are independent (no batch statistics), so the gradient of the summed log
    probabilities is each row's own."""
    with torch.enable_grad():
        x = x_t.detach().requires_grad_(True)
        log_p = torch.log_softmax(classifier(x, t).float(), dim=-1)  # [B, K]
        chosen = log_p.gather(1, label.long().view(-1, 1)).sum()
        return torch.autograd.grad(chosen, x)[0].to(x_t.dtype)


class ClassifierGuidedDenoiser:
    """Classifier guidance in its ε form (Eq. 14 and Algorithm 2 of Dhariwal & Nichol 2021):

        ε̃ = ε̂ − s·√(1−ᾱ_t)·∇_{x_t} log p(y | x_t, t),  x̂_0 from ε̃ (Eq. 4 solved for x_0),

    so every sampler over a denoiser (ddpm, ddim, the DPM-Solvers, heun) follows the guided
    score. `classifier(x_t, t)` gives the logits of a noise-aware classifier; `label` is the
    class y asked for. `conditional`: the inner denoiser takes the label too (a conditional
    run, where it may be classifier-free guided already); an unconditional run's network gets
    None. Without a label, or at s = 0, it is the inner denoiser, draw for draw."""

    def __init__(self, inner: DenoiserLike, classifier: Classifier, scale: float, conditional: bool):
        self.inner, self.classifier, self.scale, self.conditional = inner, classifier, scale, conditional
        self.schedule = inner.schedule
        self.variance = inner.variance

    def __call__(self, x_t: torch.Tensor, t: torch.Tensor, label: torch.Tensor | None = None) -> DenoiserOutput:
        out = self.inner(x_t, t, label if self.conditional else None)
        if label is None or self.scale == 0:
            return out
        grad = log_prob_gradient(self.classifier, x_t, t, label)
        eps = out.eps - self.scale * extract(self.schedule.sqrt_one_minus_alphas_cumprod, t, x_t) * grad
        return DenoiserOutput(x0=process.x0_from_eps(self.schedule, x_t, t, eps), eps=eps, var_frac=out.var_frac)


Clip = Literal["static", "dynamic", "none"]
CLIPS: tuple[str, ...] = get_args(Clip)


class ClippedDenoiser:
    """Keep x̂_0 in the data's range [-1, 1] and recompute ε̂ from it, so samplers stay
    consistent. "static": clip to [-1, 1] (improved-diffusion's clip_denoised). "dynamic":
    dynamic thresholding (Sec. 2.3 of Saharia et al. 2022, Imagen): per sample, s = the
    `percentile` quantile of |x̂_0|, at least 1; x̂_0 <- clip(x̂_0, −s, s)/s, which pulls
    saturated predictions back inside instead of flattening them (useful with strong guidance)."""

    def __init__(self, inner: DenoiserLike, mode: str = "static", percentile: float = 0.995):
        check_choice("clipping", mode, ("static", "dynamic"))
        check_finite("--dynamic-threshold", percentile)
        if not 0 < percentile <= 1:
            raise UserError(f"--dynamic-threshold (the percentile of |x̂_0|) must lie in (0, 1], got {percentile}")
        self.inner, self.mode, self.percentile = inner, mode, percentile
        self.schedule = inner.schedule
        self.variance = inner.variance

    def __call__(self, x_t: torch.Tensor, t: torch.Tensor, label: torch.Tensor | None = None) -> DenoiserOutput:
        out = self.inner(x_t, t, label)
        if self.mode == "static":
            x0 = out.x0.clamp(-1, 1)
        else:
            s = out.x0.flatten(1).abs().quantile(self.percentile, dim=1).clamp(min=1)  # [B]
            s = append_dims(s, x_t.ndim)
            x0 = torch.maximum(torch.minimum(out.x0, s), -s) / s
        return DenoiserOutput(x0=x0, eps=process.eps_from_x0(self.schedule, x_t, t, x0), var_frac=out.var_frac)


def for_sampling(base: Denoiser, num_classes: int, guidance: float, clip: str, percentile: float = 0.995,
                 classifier: Classifier | None = None, classifier_scale: float = 0.0, *, guide: DenoiserLike | None = None,
                 guide_scale: float = 1.0, interval: Interval | None = None) -> DenoiserLike:
    """The denoiser a sampler calls: autoguidance of `base` by `guide` with scale `guide_scale`
    (when a guide is given), then classifier-free guidance of strength `guidance` when the network
    is conditional (`num_classes` > 0), both only at the σ_t inside `interval` (None: every step),
    then classifier guidance of scale `classifier_scale` by `classifier` (when given), then x̂_0
    kept in range by `clip`: static, dynamic (Imagen's thresholding at `percentile`) or none.

    Autoguidance comes first, so classifier-free guidance mixes the autoguided conditional and
    unconditional predictions (4 network passes per evaluation with both). The order: the guidances shift ε̂ (CFG mixes two network passes, the classifier adds
    its gradient to the result, as Dhariwal & Nichol's guidance adds to whatever score the
    model gives), and the clip comes last so that the x̂_0 every sampler takes lies in the
    data's range after both shifts (a large scale pushes x̂_0 out of [-1, 1]; clipping first,
    as guided-diffusion's DDIM path does, would hand the data-prediction solvers an x̂_0 the
    gradient moved outside again)."""
    check_choice("clipping", clip, CLIPS)
    denoiser: DenoiserLike = base
    if guide is not None:
        denoiser = AutoGuidedDenoiser(denoiser, guide, guide_scale, interval)
    if num_classes:
        denoiser = GuidedDenoiser(denoiser, guidance, null_label=num_classes, interval=interval)
    if classifier is not None:
        denoiser = ClassifierGuidedDenoiser(denoiser, classifier, classifier_scale, conditional=num_classes > 0)
    return denoiser if clip == "none" else ClippedDenoiser(denoiser, clip, percentile)
