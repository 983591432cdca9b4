"""Noise schedules: β_t and every table derived from it.

Timestep convention (relied on everywhere): timesteps are integers
t ∈ {0, …, T-1} indexing these tables, and index t is the paper's step t + 1.
So `alphas_cumprod[0]` = ᾱ_1 (slightly below 1) and `alphas_cumprod[T-1]` = ᾱ_T
(close to 0); x_{-1} in index terms is the data x_0, with ᾱ = 1.

Notation: betas -> β_t, alphas -> α_t = 1 - β_t, alphas_cumprod -> ᾱ_t = ∏_{s≤t} α_s,
posterior_variance -> β̃_t = β_t (1 - ᾱ_{t-1}) / (1 - ᾱ_t).

Tables are built once in float64 ("use float64 for accuracy", improved-diffusion)
and never mutated; `NoiseSchedule.to` returns a cast copy for a device.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Literal, get_args

import torch

from .errors import UserError, check_choice, check_positive

ScheduleName = Literal["linear", "cosine", "quadratic", "sigmoid"]
SCHEDULES: tuple[str, ...] = get_args(ScheduleName)
Spacing = Literal["linspace", "leading", "trailing"]
SPACINGS: tuple[str, ...] = get_args(Spacing)


RANGED: tuple[str, ...] = ("linear", "quadratic", "sigmoid")  # the schedules whose β run between two ends


def _linear_range(num_steps: int) -> tuple[float, float]:
    """β_1 and β_T of Ho et al. 2020 (1e-4 to 0.02 at T = 1000), scaled by 1000 / T
    so other T keep the same total noise (as improved-diffusion scales them)."""
    scale = 1000.0 / num_steps
    return scale * 1e-4, scale * 0.02


def beta_range(name: str, num_steps: int, beta_start: float | None = None, beta_end: float | None = None) -> tuple[float, float]:
    """(β_1, β_T) of a linear, quadratic or sigmoid schedule: the ends given, else Ho et al.
    2020's 1e-4 and 0.02 scaled by 1000 / T (_linear_range). Only the end given is replaced,
    and a pair with an end given must satisfy 0 < β_1 ≤ β_T < 1. The cosine schedule has no ends to set."""
    if name not in RANGED:
        if beta_start is not None or beta_end is not None:
            raise UserError(f"--beta-start/--beta-end set the ends of the {', '.join(RANGED)} schedules; the {name} schedule "
                            "is defined by its ᾱ curve (Nichol & Dhariwal 2021), so drop them or pick --schedule linear")
        return _linear_range(num_steps)
    default_start, default_end = _linear_range(num_steps)
    if beta_start is None and beta_end is None:
        return default_start, default_end  # at T < 20 the scaled end passes 1: make_betas clips it at max_beta
    start = default_start if beta_start is None else float(beta_start)
    end = default_end if beta_end is None else float(beta_end)
    if not (math.isfinite(start) and math.isfinite(end) and 0 < start <= end < 1):
        raise UserError(f"--beta-start {start:g} and --beta-end {end:g} must satisfy 0 < start ≤ end < 1 "
                        "(e.g. 1e-4 and 0.02, Ho et al. 2020)")
    return start, end


def log_snr(alpha_bar: torch.Tensor) -> torch.Tensor:
    """λ = log SNR = log(ᾱ / (1 − ᾱ)) of any ᾱ (a table or a few values); DPM-Solver and the
    ODE likelihood work in half of it, log(α/σ) = λ/2."""
    return torch.log(alpha_bar) - torch.log1p(-alpha_bar)


def make_betas(name: str, num_steps: int, *, beta_start: float | None = None, beta_end: float | None = None,
               cosine_s: float = 0.008, max_beta: float = 0.999) -> torch.Tensor:
    """β_t for t = 0..T-1 in float64; linear, quadratic and sigmoid run from `beta_start` to
    `beta_end` (beta_range: by default 1e-4 to 0.02 scaled by 1000 / T).

    linear: Ho et al. 2020; cosine: Eq. 17 of Nichol & Dhariwal 2021,
    ᾱ(t) = f(t)/f(0), f(t) = cos²((t/T + s)/(1 + s) · π/2), β clipped at `max_beta`;
    quadratic: linear in √β; sigmoid: β follows a sigmoid over [-6, 6] (GeoDiff, Xu et al. 2022).
    Every schedule is clipped at `max_beta`.
    """
    check_choice("schedule", name, SCHEDULES)
    check_positive("the number of diffusion steps T (--timesteps)", num_steps)
    start, end = beta_range(name, num_steps, beta_start, beta_end)
    if name == "cosine":
        t = torch.arange(num_steps + 1, dtype=torch.float64) / num_steps
        f = torch.cos((t + cosine_s) / (1 + cosine_s) * math.pi / 2) ** 2
        alpha_bar = f / f[0]
        return (1 - alpha_bar[1:] / alpha_bar[:-1]).clamp(max=max_beta)
    if name == "linear":
        betas = torch.linspace(start, end, num_steps, dtype=torch.float64)
    elif name == "quadratic":
        betas = torch.linspace(start**0.5, end**0.5, num_steps, dtype=torch.float64) ** 2
    else:
        betas = torch.sigmoid(torch.linspace(-6, 6, num_steps, dtype=torch.float64)) * (end - start) + start
    return betas.clamp(max=max_beta)  # scaled for T < 20, β would pass 1


def posterior_coefficients(
    alpha_bar_t: torch.Tensor, alpha_bar_s: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """q(x_s | x_t, x_0) for any earlier step s < t (Eqs. 6-7 of Ho et al. 2020, with
    α_t replaced by ᾱ_t/ᾱ_s so it also holds between non-adjacent steps).

    Returns (coef_x0, coef_xt, variance): mean = coef_x0·x_0 + coef_xt·x_t.
    """
    beta_ts = 1 - alpha_bar_t / alpha_bar_s  # β of the jump s -> t
    coef_x0 = alpha_bar_s.sqrt() * beta_ts / (1 - alpha_bar_t)
    coef_xt = (alpha_bar_t / alpha_bar_s).sqrt() * (1 - alpha_bar_s) / (1 - alpha_bar_t)
    variance = beta_ts * (1 - alpha_bar_s) / (1 - alpha_bar_t)
    return coef_x0, coef_xt, variance


@dataclass(frozen=True, eq=False)
class NoiseSchedule:
    """Every per-step table of a discrete Gaussian diffusion, indexed by t ∈ {0..T-1}."""

    betas: torch.Tensor  # β_t
    alphas: torch.Tensor  # α_t = 1 - β_t
    alphas_cumprod: torch.Tensor  # ᾱ_t
    alphas_cumprod_prev: torch.Tensor  # ᾱ_{t-1}, with ᾱ_{-1} = 1
    sqrt_alphas_cumprod: torch.Tensor  # √ᾱ_t
    sqrt_one_minus_alphas_cumprod: torch.Tensor  # √(1 - ᾱ_t)
    sqrt_recip_alphas: torch.Tensor  # 1/√α_t
    sqrt_recip_alphas_cumprod: torch.Tensor  # 1/√ᾱ_t
    sqrt_recipm1_alphas_cumprod: torch.Tensor  # √(1/ᾱ_t - 1)
    posterior_variance: torch.Tensor  # β̃_t (0 at t = 0)
    posterior_log_variance_clipped: torch.Tensor  # log β̃_t with β̃_0 replaced by β̃_1
    fixed_large_log_variance: torch.Tensor  # log σ² of fixed_large: log β_t, with β̃_1 (as above) at t = 0
    posterior_mean_coef1: torch.Tensor  # multiplies x_0 in μ̃_t
    posterior_mean_coef2: torch.Tensor  # multiplies x_t in μ̃_t
    log_snr: torch.Tensor  # λ_t = log(ᾱ_t / (1 - ᾱ_t))

    @classmethod
    def from_betas(cls, betas: torch.Tensor) -> "NoiseSchedule":
        betas = torch.as_tensor(betas, dtype=torch.float64)
        if betas.ndim != 1 or len(betas) == 0:
            raise UserError("betas must be a non-empty 1-D sequence")
        if not bool(((betas > 0) & (betas < 1)).all()):
            raise UserError("every beta must lie strictly between 0 and 1")
        alphas = 1 - betas
        alpha_bar = torch.cumprod(alphas, 0)
        alpha_bar_prev = torch.cat([alpha_bar.new_ones(1), alpha_bar[:-1]])
        coef1, coef2, post_var = posterior_coefficients(alpha_bar, alpha_bar_prev)
        # β̃_0 = 0, so its log is clipped to β̃_1 (improved-diffusion does the same).
        post_logvar = torch.log(torch.cat([post_var[1:2], post_var[1:]])) if len(betas) > 1 else torch.log(betas)
        # fixed_large: σ² = β_t, but at t = 0 the clipped β̃ above, which gives the L_0 decoder a
        # better likelihood (log(append(β̃_1, β[1:])) of Ho et al. 2020's code and improved-diffusion).
        large_logvar = torch.cat([post_logvar[:1], torch.log(betas[1:])])
        return cls(
            betas=betas,
            alphas=alphas,
            alphas_cumprod=alpha_bar,
            alphas_cumprod_prev=alpha_bar_prev,
            sqrt_alphas_cumprod=alpha_bar.sqrt(),
            sqrt_one_minus_alphas_cumprod=(1 - alpha_bar).sqrt(),
            sqrt_recip_alphas=alphas.rsqrt(),
            sqrt_recip_alphas_cumprod=alpha_bar.rsqrt(),
            sqrt_recipm1_alphas_cumprod=(1 / alpha_bar - 1).sqrt(),
            posterior_variance=post_var,
            posterior_log_variance_clipped=post_logvar,
            fixed_large_log_variance=large_logvar,
            posterior_mean_coef1=coef1,
            posterior_mean_coef2=coef2,
            log_snr=log_snr(alpha_bar),
        )

    @classmethod
    def from_name(cls, name: str, num_steps: int, beta_start: float | None = None, beta_end: float | None = None) -> "NoiseSchedule":
        """The tables of a named schedule (make_betas; `beta_start`/`beta_end`: β_1 and β_T of
        linear, quadratic and sigmoid, None for the default ends)."""
        return cls.from_betas(make_betas(name, num_steps, beta_start=beta_start, beta_end=beta_end))

    @classmethod
    def from_config(cls, diffusion) -> "NoiseSchedule":
        """The schedule a run's DiffusionConfig names: its schedule, T and β ends (config.json's
        "diffusion"), the one way every room rebuilds a run's schedule."""
        return cls.from_name(diffusion.schedule, diffusion.num_steps, diffusion.beta_start, diffusion.beta_end)

    @property
    def num_steps(self) -> int:
        return len(self.betas)

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype = torch.float32) -> "NoiseSchedule":
        """A copy with every table cast once to `dtype` on `device` (float64 is not on MPS)."""
        return NoiseSchedule(**{f.name: getattr(self, f.name).to(dtype).to(device) for f in fields(self)})

    def respace(self, timesteps: torch.Tensor) -> "NoiseSchedule":
        """The schedule of the sub-process on the kept `timesteps` (any order): β recomputed
        as β_i = 1 − ᾱ_{k_i}/ᾱ_{k_{i−1}} so ᾱ is kept exactly at the kept steps
        (improved-diffusion's `space_timesteps`). Samplers reach the same result by
        walking a grid of the full schedule; this object is for inspection and tables."""
        kept = torch.as_tensor(timesteps).long().unique(sorted=True)
        abar = self.alphas_cumprod[kept]
        prev = torch.cat([abar.new_ones(1), abar[:-1]])
        return NoiseSchedule.from_betas(1 - abar / prev)

    def full_grid(self) -> torch.Tensor:
        """All timesteps, T-1 down to 0: the grid of ancestral sampling."""
        return torch.arange(self.num_steps - 1, -1, -1)


def schedule_tables(schedules, num_steps: int, beta_start: float | None = None,
                    beta_end: float | None = None) -> dict[str, NoiseSchedule]:
    """label → NoiseSchedule of T = `num_steps` for each of `schedules`: a name, or (name,
    β_start, β_end); the ranged schedules named alone take `beta_start`/`beta_end` (None: the
    default ends), the cosine one is drawn as it is. The label names the β ends used."""
    tables: dict[str, NoiseSchedule] = {}
    for spec in schedules:
        name, start, end = (spec, None, None) if isinstance(spec, str) else spec
        check_choice("schedule", name, SCHEDULES)
        if name in RANGED and start is None and end is None:
            start, end = beta_start, beta_end
        ends = beta_range(name, num_steps, start, end)
        label = name if name not in RANGED else f"{name} β {ends[0]:.3g} → {ends[1]:.3g}"
        tables[label] = NoiseSchedule.from_name(name, num_steps, start, end)
    return tables


def timestep_grid(num_train_steps: int, num_steps: int, spacing: str = "linspace") -> torch.Tensor:
    """`num_steps` distinct timesteps out of {0..T-1}, descending, for sampling.

    linspace: evenly spaced from T-1 down to 0 (rounded); leading: 0, k, 2k, … (DDIM,
    Song et al. 2021); trailing: T-1, T-1-k, … (Table 2 of Lin et al. 2024).
    """
    check_choice("timestep spacing", spacing, SPACINGS)
    if not 0 < num_steps <= num_train_steps:
        raise UserError(f"sampling steps must be between 1 and the trained T = {num_train_steps}, got {num_steps}")
    if spacing == "linspace":
        return torch.linspace(num_train_steps - 1, 0, num_steps, dtype=torch.float64).round().long()
    if spacing == "leading":
        return (torch.arange(num_steps) * (num_train_steps // num_steps)).flip(0)
    step = num_train_steps / num_steps  # trailing
    return (num_train_steps - torch.arange(num_steps, dtype=torch.float64) * step).round().long() - 1
